"""Small file helpers shared by checkpoints, reports and downloads: digests and atomic writes,
and where the checkout is."""

import hashlib
import json
import os
import tempfile

# The checkout this package lives in: train_dist.py, the launch/ scripts that plans name, and
# runs/, the default --model_dir's home (on a cluster the checkout is on the file system every
# node shares, README "Running on a cluster").
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digest(path: str, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str, obj) -> None:
    """Write JSON beside its final name, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
