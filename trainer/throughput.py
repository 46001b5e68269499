"""Training throughput per epoch: images per second of the training steps (validation excluded)."""
import time

import tf_keras as keras

LOG_KEY = "img_per_s"  # in the epoch logs: Keras's epoch line, history.json, TensorBoard epoch_img_per_s


class Throughput(keras.callbacks.Callback):
    """Adds LOG_KEY to each epoch's logs; put it before TensorBoard in the callback list."""

    def __init__(self, global_batch_size, clock=time.perf_counter):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.clock = clock
        self.start = self.end = None
        self.steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.steps = self.clock(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.end, self.steps = self.clock(), self.steps + 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.steps and self.end > self.start:
            logs[LOG_KEY] = self.steps * self.global_batch_size / (self.end - self.start)
