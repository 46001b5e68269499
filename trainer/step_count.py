"""Optimizer steps counted in Python from the batch indices Keras passes to the train batch
hooks: no device read per step, and right with `steps_per_execution` = k, where one pair of
hooks covers k steps (`on_train_batch_begin(first)`, `on_train_batch_end(last)`)."""


class StepCount:
    """`done`: steps finished so far (from `start`, e.g. a resumed optimizer's iterations)."""

    def __init__(self, start=0):
        self.done, self._first = start, 0

    def begin(self, batch):
        self._first = batch

    def end(self, batch, every):
        """Counts the steps of the call ending at `batch`; True when `done` passed a multiple of
        `every` (0: never)."""
        before = self.done
        self.done += batch - self._first + 1
        return bool(every) and self.done // every != before // every
