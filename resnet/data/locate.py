"""Find CIFAR-10 on this machine, or fetch the official archive and check its MD5.

Search order without --data_dir: $CIFAR10_DIR, then Keras's cache (~/.keras/datasets, where
tf.keras.datasets.cifar10 leaves cifar-10-batches-py). --download fetches the official archive
into $CIFAR10_DIR (or the Keras cache) through a temporary file that is renamed only after its MD5
matches the published one, so an interrupted or tampered download never looks like data.
"""

import os
import tempfile
import urllib.error
import urllib.request
from typing import Optional

from resnet import fileio
from resnet.errors import UsageError

# Published at https://www.cs.toronto.edu/~kriz/cifar.html
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
_KNOWN_NAMES = ("cifar-10-batches-py", "cifar-10-batches-bin", ARCHIVE_NAME,
                "cifar-10-binary.tar.gz", "cifar-10-images.tar.gz", "cifar-10-images")


def keras_cache() -> str:
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def candidates() -> list:
    """Where to look, in order, when --data_dir is not given."""
    found = []
    env = os.environ.get("CIFAR10_DIR")
    if env:
        found.append(env)
    found += [os.path.join(keras_cache(), n) for n in _KNOWN_NAMES]
    return found


def default_download_dir() -> str:
    return os.environ.get("CIFAR10_DIR") or keras_cache()


def find(data_dir: Optional[str]) -> str:
    """The path to read CIFAR-10 from: --data_dir if given, else the first place that exists."""
    if data_dir:
        return data_dir
    env = os.environ.get("CIFAR10_DIR")
    if env and not os.path.exists(env):
        raise UsageError(f"$CIFAR10_DIR={env}: no such file or folder; fix the variable, or "
                         "unset it to use the Keras cache, or pass --data_dir")
    for path in candidates():
        if os.path.exists(path):
            return path
    raise UsageError(
        "CIFAR-10 not found: looked in " + ", ".join(candidates()) + ". Pass --data_dir "
        "(a folder or .tar.gz in the python, binary or image-folder layout), set $CIFAR10_DIR, "
        f"or add --download to fetch {OFFICIAL_URL} (or place that file in {keras_cache()})")


def md5(path: str) -> str:
    return fileio.digest(path, "md5")


def download(dest_dir: str, url: str = OFFICIAL_URL, expected_md5: str = OFFICIAL_MD5,
             timeout: float = 60.0) -> str:
    """Fetch the archive to dest_dir/ARCHIVE_NAME unless a copy with the right MD5 is there."""
    dest = os.path.join(dest_dir, ARCHIVE_NAME)
    if os.path.isfile(dest) and md5(dest) == expected_md5:
        return dest
    os.makedirs(dest_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
        got = md5(tmp)
        if got != expected_md5:
            raise UsageError(f"{url}: downloaded file has MD5 {got}, expected {expected_md5}; it is "
                             "corrupt or not the official archive. Nothing was kept; try again, or "
                             f"download it yourself to {dest}")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError) as e:
        raise UsageError(f"cannot download {url} ({e}). Offline? Put {ARCHIVE_NAME} (or the "
                         f"extracted cifar-10-batches-py) in {dest_dir}, or pass --data_dir") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
