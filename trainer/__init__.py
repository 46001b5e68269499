"""tf.data trainer for the three VGG16 transfer-learning models of RVL-CDIP."""
