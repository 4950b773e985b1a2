"""A job whose ranks cannot reach each other ends at start-up, with a message, never hangs.

Horovod's start-up and the job's first collective (the placement table) are where ranks first
talk to each other. When the network the launcher chose does not carry them (an interface that
looks shared and leads nowhere, a firewall), Open MPI's TCP transport and Gloo keep waiting and
nothing times out. The watchdog (training/watchdog.py) only arms at the first training step, so
start-up has a deadline of its own: a rank that has not passed it within --startup_timeout
seconds says which host it is on and which network it was given, and exits EXIT_HUNG; the
launcher then ends the others.
"""

import os
import socket
import sys
import threading
from typing import Callable, Mapping, Optional

from resnet.errors import EXIT_HUNG


def network_given(environ: Mapping[str, str] = os.environ) -> str:
    """The network this rank was told to use: what the launch plan (or the user) handed to
    Open MPI or Gloo, as the rank's environment carries it."""
    for key in ("OMPI_MCA_btl_tcp_if_include", "HOROVOD_GLOO_IFACE", "NCCL_SOCKET_IFNAME"):
        if environ.get(key):
            return f"{environ[key]} ({key})"
    return "every interface of this host (no launch plan chose one)"


def rank_hint(environ: Mapping[str, str] = os.environ) -> str:
    for key in ("OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMI_RANK", "SLURM_PROCID"):
        if environ.get(key, "").isdigit():
            return f"rank {environ[key]} "
    return ""


class Deadline:
    """Call passed() once the first collective is done; until then a timer waits."""

    def __init__(self, seconds: float, exit: Callable[[int], None] = os._exit,
                 environ: Mapping[str, str] = os.environ):
        """`exit`: the process's end (os._exit: the main thread is stuck inside MPI or Gloo, so
        no clean exit); tests inject their own."""
        self.seconds, self._exit, self._environ = seconds, exit, environ
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.message: Optional[str] = None

    def start(self) -> "Deadline":
        if self.seconds > 0:
            self._thread = threading.Thread(target=self._wait, name="startup-deadline",
                                            daemon=True)
            self._thread.start()
        return self

    def passed(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _wait(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.message = (
            f"{rank_hint(self._environ)}on {socket.gethostname()}: Horovod's start-up and the "
            f"first collective did not finish within {self.seconds:g} s (--startup_timeout): "
            "this rank cannot reach the others over the network it was given, "
            f"{network_given(self._environ)}. Check that every host reaches every other over "
            "it (a firewall, an interface that leads nowhere), or name a working one with the "
            "launch scripts' --network-interfaces")
        print(f"error: {self.message}", file=sys.stderr, flush=True)
        self._exit(EXIT_HUNG)
