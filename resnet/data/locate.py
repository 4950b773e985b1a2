"""Find CIFAR-10 or CIFAR-100 on this machine, or fetch the official archive and check its MD5.

Search order without --data_dir: $CIFAR10_DIR (or $CIFAR100_DIR), then Keras's cache
(~/.keras/datasets, where tf.keras.datasets leaves cifar-10-batches-py and cifar-100-python).
--download fetches the official archive there through a temporary file that is renamed only after
its MD5 matches the published one, so an interrupted or tampered download never looks like data.
"""

import dataclasses
import os
import tempfile
import urllib.error
import urllib.request
from typing import Optional, Tuple

from resnet import fileio
from resnet.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Archive:
    title: str
    url: str
    md5: str
    env: str  # the variable that names where it is
    known_names: Tuple[str, ...]  # what a copy is called in the Keras cache

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Published at https://www.cs.toronto.edu/~kriz/cifar.html
ARCHIVES = {
    "cifar10": Archive("CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "CIFAR10_DIR",
                       ("cifar-10-batches-py", "cifar-10-batches-bin", "cifar-10-python.tar.gz",
                        "cifar-10-binary.tar.gz", "cifar-10-images.tar.gz", "cifar-10-images")),
    "cifar100": Archive("CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", "CIFAR100_DIR",
                        ("cifar-100-python", "cifar-100-binary", "cifar-100-python.tar.gz",
                         "cifar-100-binary.tar.gz")),
}
ARCHIVE_NAME = ARCHIVES["cifar10"].name


def keras_cache() -> str:
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def candidates(dataset: str = "cifar10") -> list:
    """Where to look, in order, when --data_dir is not given."""
    archive = ARCHIVES[dataset]
    found = []
    env = os.environ.get(archive.env)
    if env:
        found.append(env)
    found += [os.path.join(keras_cache(), n) for n in archive.known_names]
    return found


def default_download_dir(dataset: str = "cifar10") -> str:
    return os.environ.get(ARCHIVES[dataset].env) or keras_cache()


def find(data_dir: Optional[str], dataset: str = "cifar10") -> str:
    """The path to read from: --data_dir if given, else the first place that exists."""
    if data_dir:
        return data_dir
    archive = ARCHIVES[dataset]
    env = os.environ.get(archive.env)
    if env and not os.path.exists(env):
        raise UsageError(f"${archive.env}={env}: no such file or folder; fix the variable, or "
                         "unset it to use the Keras cache, or pass --data_dir")
    for path in candidates(dataset):
        if os.path.exists(path):
            return path
    raise UsageError(
        f"{archive.title} not found: looked in " + ", ".join(candidates(dataset)) + ". Pass "
        "--data_dir (a folder or .tar.gz: CIFAR's python or binary layout, a class-folder tree "
        f"or TFRecords), set ${archive.env}, or add --download to fetch {archive.url} (or place "
        f"that file in {keras_cache()})")


def md5(path: str) -> str:
    return fileio.digest(path, "md5")


def download(dest_dir: str, url: str, expected_md5: str = ARCHIVES["cifar10"].md5,
             timeout: float = 60.0, name: str = ARCHIVE_NAME) -> str:
    """Fetch the archive to dest_dir/name unless a copy with the right MD5 is there."""
    dest = os.path.join(dest_dir, name)
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
        raise UsageError(f"cannot download {url} ({e}). Offline? Put {name} (or the extracted "
                         f"folder) in {dest_dir}, or pass --data_dir") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(dataset: str, dest_dir: Optional[str], mirror: Optional[str]) -> str:
    """--download: the official archive of `dataset` (or the same file from a mirror)."""
    archive = ARCHIVES[dataset]
    return download(dest_dir or default_download_dir(dataset), mirror or archive.url,
                    archive.md5, name=archive.name)
