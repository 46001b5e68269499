"""tf.data trainer for the three VGG16 transfer-learning models of RVL-CDIP."""
import os

from tfrecords_tool import quiet as _quiet

_quiet.configure_tool()  # before TensorFlow is imported
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainer import compat as _compat  # noqa: E402  (after the environment above)

# AutoGraph leaves `keras` alone but not `tf_keras`: without this the first fit() of every run
# transpiled hundreds of tf_keras functions (~10 s per trace on 2 CPU cores).
_compat.autograph_skip_tf_keras()
