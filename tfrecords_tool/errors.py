"""What a tool's failure means to its caller: one base exception and every tool's exit status.

Library functions raise these (subclasses in the modules that find the problem); the command
lines (`tfrecords_tool.cli.run`) print the message as one line and exit with `exit_code`:

    0    done
    1    done, but some inputs failed and were reported one by one (unreadable pages in
         predict, a split that fails verify); everything else was processed
    2    nothing (more) done: wrong flags or arguments, missing or unusable data, models or files
    3    training stopped at a non-finite loss; the last good state is kept
    4    multi-worker training lost a worker (killed, preempted, unreachable); the last backup
         is kept: start every worker again with the same command
    143  preempted (SIGTERM): the state is saved, run the same command again
"""
OK = 0
SOME_INPUTS_FAILED = 1
NOTHING_DONE = 2
NON_FINITE_LOSS = 3
PEER_LOST = 4
PREEMPTED = 143


class ToolError(Exception):
    """A failure a tool reports as one line, then exits with `exit_code`."""
    exit_code = NOTHING_DONE


class UsageError(ToolError):
    """Wrong or missing settings, found before any work starts."""


class SomeInputsFailed(ToolError):
    """The work is done except for the inputs already reported."""
    exit_code = SOME_INPUTS_FAILED
