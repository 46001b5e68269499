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

from trainer import compat as _compat  # noqa: E402  (after the environment above)

# AutoGraph leaves `keras` alone but not `tf_keras`: without this the first fit() of every run
# transpiled hundreds of tf_keras functions (~10 s per trace on 2 CPU cores).
_compat.autograph_skip_tf_keras()

from trainer.training import TrainConfig, TrainResult, train  # noqa: E402
