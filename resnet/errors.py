"""How a run ends when it does not succeed: each exception beside the exit code it maps to.

Everything a user can get wrong (flags, data, weights, model_dir) raises UsageError with a message
that names the flag or file. train_dist.py prints it on one line and exits 2; nothing is written
before the inputs are checked, so a refused run leaves no half-written output behind.
"""


class UsageError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""


EXIT_USAGE = 2  # bad flags or data: fix the input, do not retry


class Preempted(RuntimeError):
    """Stopped by SIGTERM/SIGUSR1 after a checkpoint; the same command resumes."""


EXIT_REQUEUE = 3  # checkpointed on SIGTERM/SIGUSR1: resubmit the same command to resume


class Diverged(RuntimeError):
    """The loss became NaN or Inf."""


EXIT_DIVERGED = 4  # loss became NaN/Inf: the last good checkpoint is kept

EXIT_HUNG = 5  # no progress for --hang_timeout seconds (a rank froze), or Horovod shut down
