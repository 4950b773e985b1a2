"""The start-up deadline (resnet/runtime/startup.py): a rank stuck before the first collective
exits EXIT_HUNG naming its host and the network it was given; one that gets past it, never."""

import socket
import threading

from resnet.errors import EXIT_HUNG
from resnet.runtime import startup


class Exit:
    def __init__(self):
        self.codes, self.called = [], threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.called.set()


def test_a_rank_stuck_at_start_up_exits_naming_its_host_and_network(capsys):
    ended = Exit()
    environ = {"OMPI_MCA_btl_tcp_if_include": "10.66.0.0/24", "OMPI_COMM_WORLD_RANK": "1"}
    deadline = startup.Deadline(0.01, exit=ended, environ=environ).start()
    assert ended.called.wait(60)  # the event, not a clock: it comes once the deadline passes
    assert ended.codes == [EXIT_HUNG]
    err = capsys.readouterr().err
    assert err.startswith(f"error: rank 1 on {socket.gethostname()}: ")
    assert "10.66.0.0/24 (OMPI_MCA_btl_tcp_if_include)" in err and "--startup_timeout" in err
    assert deadline.message in err


def test_a_rank_past_its_first_collective_never_exits():
    ended = Exit()
    deadline = startup.Deadline(3600, exit=ended).start()
    deadline.passed()  # joins the timer thread: it has ended without calling exit
    assert not deadline._thread.is_alive() and ended.codes == []
    off = startup.Deadline(0, exit=ended).start()  # 0: no deadline at all
    assert off._thread is None
    off.passed()


def test_the_network_named_is_what_the_launcher_handed_over():
    assert startup.network_given({"HOROVOD_GLOO_IFACE": "eth0"}) == "eth0 (HOROVOD_GLOO_IFACE)"
    assert "no launch plan chose one" in startup.network_given({})
    assert startup.rank_hint({"HOROVOD_RANK": "3"}) == "rank 3 " and startup.rank_hint({}) == ""
