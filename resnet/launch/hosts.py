"""Host lists, in every form a launch takes them, through one parser.

- `-H node1:2,node2:2` (horovodrun and Open MPI's mpirun),
- a hostfile, a host a line: `node1`, `node1:2` or Open MPI's `node1 slots=2`, `#` comments,
- the elastic hosts file that launch/discover_hosts.sh reads (the same lines).

And one meaning of the rank counts: `-np` is every rank of the job (as horovodrun and mpirun
mean it); ranks per node follow from the hosts' slots, which must be the same on every host of a
fixed-size job, because one thread plan is made for all nodes (resnet/launch/layout.py).
"""

import re
from typing import List, Optional, Sequence, Tuple

from resnet.errors import UsageError

Host = Tuple[str, Optional[int]]  # (name, slots), slots None where the entry gives none
_ENTRY = re.compile(r"^([A-Za-z0-9_.\-]+)(?::(\d+)|\s+slots=(\d+))?$")


def _entry(text: str, where: str) -> Host:
    m = _ENTRY.match(text)
    slots = next((g for g in m.groups()[1:] if g is not None), None) if m else None
    if not m or (slots is not None and int(slots) < 1):
        raise UsageError(f"{where}: {text!r} is not host or host:slots (or Open MPI's "
                         "'host slots=N'; slots a positive number)")
    return m.group(1), int(slots) if slots else None


def parse_list(text: str, source: str = "-H") -> List[Host]:
    """`-H h1:2,h2:2`."""
    entries = [e.strip() for e in text.split(",")]
    if not all(entries):
        raise UsageError(f"{source} {text}: an empty host between commas")
    return [_entry(e, f"{source} {text}") for e in entries]


def parse_lines(text: str, source: str = "hosts") -> List[Host]:
    """A host a line, `#` comments and blank lines skipped."""
    hosts = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            hosts.append(_entry(line, f"{source}:{number}"))
    return hosts


def read_file(path: str, flag: str) -> List[Host]:
    """The hosts of file `path`, given as `flag`: a clear error for a missing or empty file."""
    try:
        with open(path) as f:
            hosts = parse_lines(f.read(), path)
    except OSError as e:
        raise UsageError(f"{flag}={path}: {e.strerror}; write one host or host:slots per "
                         "line") from e
    if not hosts:
        raise UsageError(f"{flag}={path}: names no host")
    return hosts


def with_slots(hosts: Sequence[Host], default: int) -> List[Tuple[str, int]]:
    return [(name, slots or default) for name, slots in hosts]


def names(hosts: Sequence[Host]) -> List[str]:
    return [name for name, _ in hosts]


def ranks_per_node(hosts: Sequence[Host], np: Optional[int], default: int) -> int:
    """Ranks on each of `hosts` for a fixed-size job of `np` ranks in all (None: the hosts'
    slots, or `default` per host): the same on every host, or a refusal that says why."""
    listed = ",".join(f"{h}:{s}" if s else h for h, s in hosts)
    given = {s for _, s in hosts}
    if len(given) > 1:  # two counts, or slots for some hosts only
        raise UsageError(f"hosts {listed}: every host must run the same number of ranks (one "
                         "thread plan serves all nodes); give each the same slots")
    per_node = given.pop()
    if per_node is None and np is not None:
        if np % len(hosts):
            raise UsageError(f"-np {np} over {len(hosts)} hosts ({listed}): the ranks do not "
                             f"divide evenly; use a multiple of {len(hosts)}")
        per_node = np // len(hosts)
    per_node = per_node or default
    if np is not None and np != per_node * len(hosts):
        raise UsageError(f"-np {np} with hosts {listed}: that is {per_node} rank(s) on each of "
                         f"{len(hosts)} host(s), {per_node * len(hosts)} in all; give -np "
                         f"{per_node * len(hosts)}, or slots that add up to {np}")
    return per_node
