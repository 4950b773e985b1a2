"""A rank that stops making progress ends the job instead of holding it forever.

Horovod's stall check (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS, set by the launch plans) catches a
rank whose training thread stops submitting tensors while the process lives on. It cannot catch a
rank that is frozen whole (SIGSTOP, a node thrashing, a read stuck in the kernel on a hung network
file system): Horovod's background thread on that rank stops too, the others wait inside an MPI or
Gloo collective, and nothing there times out. So every rank runs this watchdog: a thread that
ends its own process with EXIT_HUNG when, once the first training step is done, no step or
evaluation batch has finished for --hang_timeout seconds. The launcher sees a rank exit non-zero
and ends the rest (the frozen one included); the same command resumes from the last checkpoint.
"""

import os
import socket
import sys
import threading
import time
from typing import Callable, Optional

import tensorflow as tf
from absl import logging

from resnet.errors import EXIT_HUNG


class Watchdog(tf.keras.callbacks.Callback):
    """Call beat() at each sign of progress (it is also a Keras callback that beats every
    training step); `where` says what the rank was last doing, for the message."""

    POLL_SECONDS = 1.0

    def __init__(self, timeout_seconds: float, rank: int, where: Callable[[], str],
                 clock: Callable[[], float] = time.monotonic,
                 exit: Callable[[int], None] = os._exit, poll_seconds: float = POLL_SECONDS):
        """`clock` and `exit` are the monotonic clock and the process's end (os._exit: the main
        thread is stuck in a collective, so no clean exit); tests inject their own."""
        super().__init__()
        self.timeout, self.rank, self._where = timeout_seconds, rank, where
        self._clock, self._exit, self._poll = clock, exit, poll_seconds
        # Armed by the first beat: before it, tracing the step and creating oneDNN's kernels can
        # take minutes at large image sizes, and that is no sign of a frozen rank.
        self._last: Optional[float] = None
        self._stop = threading.Event()

    def start(self) -> "Watchdog":
        if self.timeout > 0:
            threading.Thread(target=self._watch, name="watchdog", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> None:
        self._last = self._clock()

    def on_train_batch_end(self, batch, logs=None):
        self.beat()

    def on_test_batch_end(self, batch, logs=None):
        self.beat()

    def on_predict_batch_end(self, batch, logs=None):
        self.beat()

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            self.check()

    def check(self) -> None:
        """End the process if armed and idle for longer than the timeout (the thread's poll)."""
        if self._last is None:
            return
        idle = self._clock() - self._last
        if idle > self.timeout:
            message = (f"rank {self.rank} on {socket.gethostname()}: no progress for "
                       f"{idle:.0f} s (--hang_timeout={self.timeout:g}; last: {self._where()}): "
                       "a rank has frozen or the job lost its network. Exiting so the launcher "
                       "ends the job; run the same command to resume from the last checkpoint")
            logging.error("%s", message)
            print(f"error: {message}", file=sys.stderr, flush=True)
            self._stop.set()
            self._exit(EXIT_HUNG)
