"""Host discovery for --elastic runs: the hosts that may run ranks now, one `host:slots` a line.

horovodrun --host-discovery-script runs launch/discover_hosts.sh every few seconds, and that calls
this. The hosts come from the file named by $ELASTIC_HOSTS_FILE, `host` or `host:slots` per line,
`#` comments: edit it while the job runs to add a node (ranks join at the next commit) or drain
one (its ranks leave at the next commit). A host without slots gets $ELASTIC_SLOTS (default 1).

Horovod blacklists a host whose rank failed, so on one machine list it under several names (say
localhost, 127.0.0.1 and its hostname) for a failed rank to leave the others a place to run.

Kept free of TensorFlow: Horovod runs it often, and it must answer in milliseconds.
"""

import os
import sys
from typing import List, Optional, Sequence, Tuple

from resnet.errors import EXIT_USAGE, UsageError
from resnet.launch import hosts as hosts_lib

ENV_FILE = "ELASTIC_HOSTS_FILE"
ENV_SLOTS = "ELASTIC_SLOTS"


def discover(env=os.environ) -> List[Tuple[str, int]]:
    path = env.get(ENV_FILE)
    if not path:
        raise UsageError(f"${ENV_FILE} is not set: name a file of host:slots lines")
    try:
        slots = int(env.get(ENV_SLOTS, "1"))
    except ValueError:
        raise UsageError(f"${ENV_SLOTS}={env[ENV_SLOTS]!r} is not a number") from None
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"${ENV_FILE}={path}: {e.strerror}") from e
    return hosts_lib.with_slots(hosts_lib.parse_lines(text, path), slots)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        hosts = discover()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(f"{host}:{slots}" for host, slots in hosts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
