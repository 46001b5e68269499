"""tf.data trainer for the three VGG16 transfer-learning models of RVL-CDIP.

Library (settings in, results out; no flags): `train(TrainConfig(...))` in trainer.training,
`evaluate` in trainer.evaluation, `predict` in trainer.prediction, `export` in trainer.serving,
`report` in trainer.reporting. Tools (`python -m trainer.X`, flags -> settings -> the library):
main, evaluate, predict, export, report, bench.
"""
import os

from tfrecords_tool import quiet as _quiet

_quiet.configure_tool()  # before TensorFlow is imported
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tensorflow.python.autograph.core import config as _autograph_config

# AutoGraph leaves the `keras` package alone (DoNotConvert rule) but not `tf_keras`, so the first
# fit() of every run transpiled hundreds of tf_keras functions (~10 s on 2 CPU cores per trace).
# Treat tf_keras like Keras 2 always was; our own code (trainer.*) is still converted.
if not any(getattr(rule, "_prefix", None) == "tf_keras"
           for rule in _autograph_config.CONVERSION_RULES):
    _autograph_config.CONVERSION_RULES = ((_autograph_config.DoNotConvert("tf_keras"),)
                                          + tuple(_autograph_config.CONVERSION_RULES))


from trainer.training import TrainConfig, TrainResult, train  # noqa: E402
