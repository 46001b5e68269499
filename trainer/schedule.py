"""Learning-rate schedules: a linear warm-up, then constant or cosine decay.

`learning_rate(peak, "cosine", warmup_steps, total_steps)` is what trainer/main.py gives each
optimizer (model3's head and fine-tuned VGG16 layers each get their own peak). The schedule is a
function of the optimizer's step counter, which the backup restores: a resumed run continues the
curve where it stopped, and a run restarted with other flags follows the new flags.
"""
import tensorflow as tf
import tf_keras as keras

SCHEDULES = ("constant", "cosine")


@keras.saving.register_keras_serializable("trainer")
class WarmupThenDecay(keras.optimizers.schedules.CosineDecay):
    """`peak * (step + 1) / warmup_steps` during the warm-up, then `peak` (constant) or a cosine
    from `peak` down to 0 at `total_steps` (and 0 after it).

    Keras's CosineDecay(initial_learning_rate=0.0, warmup_target=peak, ...) computes it (alpha=1
    is the constant rate after the warm-up). Its warm-up gives step s the rate peak * s / w, so
    the first step would be taken at rate 0; ours counts the step being taken, peak * (s + 1) /
    w, reaching peak at step w - 1: it is Keras's at step s + 1 during the warm-up, and Keras's
    own decay from step w on (identical float32 values at every step, tests/test_schedule.py).
    The config stays ours, so .keras files saved before load unchanged.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine"):
        if decay not in SCHEDULES:
            raise ValueError(f"decay must be one of {SCHEDULES}, not {decay!r}")
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.decay = decay
        # 0.0, not 0: CosineDecay computes in the dtype of initial_learning_rate (0 -> int32).
        super().__init__(initial_learning_rate=0.0,
                         decay_steps=max(self.total_steps - int(warmup_steps), 1),
                         alpha=0.0 if decay == "cosine" else 1.0,
                         warmup_target=self.peak, warmup_steps=int(warmup_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        return super().__call__(tf.where(step < self.warmup_steps, step + 1.0, step))

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
