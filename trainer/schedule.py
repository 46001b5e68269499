"""Learning-rate schedules: a linear warm-up, then constant or cosine decay.

`learning_rate(peak, "cosine", warmup_steps, total_steps)` is what trainer/main.py gives each
optimizer (model3's head and fine-tuned VGG16 layers each get their own peak). The schedule is a
function of the optimizer's step counter, which the backup restores: a resumed run continues the
curve where it stopped, and a run restarted with other flags follows the new flags.
"""
import math

import tensorflow as tf
import tf_keras as keras

SCHEDULES = ("constant", "cosine")


@keras.saving.register_keras_serializable("trainer")
class WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * (step + 1) / warmup_steps` during the warm-up, then `peak` (constant) or a cosine
    from `peak` down to 0 at `total_steps` (and 0 after it)."""

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine"):
        super().__init__()
        if decay not in SCHEDULES:
            raise ValueError(f"decay must be one of {SCHEDULES}, not {decay!r}")
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.decay = decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        warming = self.peak * tf.minimum((step + 1.0) / warmup, 1.0)
        if self.decay == "constant":
            after = tf.constant(self.peak)
        else:
            span = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            after = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warming, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay}


def is_constant(schedule, warmup_steps):
    """True when the rate is a plain float: the optimizer keeps it in a variable a run can set."""
    return schedule == "constant" and not warmup_steps


def learning_rate(peak, schedule, warmup_steps, total_steps):
    """A float for a constant rate without warm-up (the optimizer's plain variable), else a
    WarmupThenDecay."""
    if is_constant(schedule, warmup_steps):
        return peak
    return WarmupThenDecay(peak, total_steps, warmup_steps, decay=schedule)
