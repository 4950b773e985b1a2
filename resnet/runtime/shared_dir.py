"""Whether every host of a job sees the same --model_dir, checked before anything is trained.

Rank 0 alone writes checkpoints and reads them back on resume, so a --model_dir that is
node-local (a /tmp, a local disk mounted at the same path) trains, but a requeued job whose rank 0
lands on another node, or an --eval_only from another host, silently starts over or finds no
checkpoint. So across hosts rank 0 writes a marker with a random token beside where the model
will go, each host's first rank looks for it, and a host that does not see it stops the job on
every rank with its name. The marker goes in the nearest folder that exists already (the
--model_dir itself once a run made it): a refused run creates nothing. A fresh random name also
means no NFS client has a cached "no such file" for it: each looks it up on the server.

Elastic runs skip it: nothing collective may run before Horovod's elastic loop.
"""

import os
import secrets

from resnet.errors import UsageError
from resnet.runtime import world as world_lib

MARKER_PREFIX = ".shared-check-"


def nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def _write_marker(model_dir: str) -> tuple:
    token = secrets.token_hex(16)
    path = os.path.join(nearest_existing(model_dir), MARKER_PREFIX + token)
    with open(path, "x") as f:
        f.write(token)
    return path, token


def _sees(path: str, token: str) -> bool:
    try:
        with open(path) as f:
            return f.read() == token
    except OSError:
        return False


def check(world: world_lib.World, model_dir: str) -> None:
    """UsageError on every rank when a host of the job does not see rank 0's --model_dir."""
    if world.local_size == world.size:  # one host: nothing to compare
        return
    path, token = world_lib.chief_decides(world, lambda: _write_marker(model_dir))
    try:
        seen = world_lib.allgather_json(world, {
            "host": world.host, "sees": _sees(path, token) if world.local_rank == 0 else None})
    finally:
        if world.is_chief:
            os.remove(path)
    blind = sorted({row["host"] for row in seen if row["sees"] is False})
    if blind:
        raise UsageError(
            f"--model_dir={model_dir}: host(s) {', '.join(blind)} do not see the folder that rank "
            f"0 on {seen[0]['host']} writes checkpoints to ({os.path.dirname(path)} there is not "
            "the same folder): a resumed or requeued job would start over. Give a --model_dir on "
            "a file system every host mounts at the same path (the default, under the checkout, "
            "is, where the checkout is shared)")
