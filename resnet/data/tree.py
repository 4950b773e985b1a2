"""The files of a data set: under a folder, or inside a tar archive, by '/'-separated path.

A folder's files are read when asked for (a data set may be far larger than memory); an
archive's are read into memory as it is opened (gzip cannot seek), so archives suit sets that
fit, like CIFAR. Hidden files (.DS_Store and friends) are left out.
"""

import os
import tarfile
import zlib
from typing import Dict, Iterable, List, Optional

from resnet.errors import UsageError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class Tree:
    def __init__(self, source: str, names: Iterable[str], data: Optional[Dict[str, bytes]],
                 dirs: Iterable[str] = ()):
        self.source = source
        self._names = sorted(names)
        self._data = data  # an archive's files, read as it was opened; None for a folder
        # Every folder, empty ones included (an empty class folder is a mistake to report), and
        # every ancestor of a file: an archive need not list its folders (tar's file lists,
        # Python's tarfile.addfile), and a test/ known only from its files is still test/.
        self.dirs = set(dirs) | {n[:i] for n in self._names for i, c in enumerate(n) if c == "/"}

    @property
    def is_folder(self) -> bool:
        """Its files have paths on disk: they can be streamed."""
        return self._data is None

    @classmethod
    def from_dir(cls, path: str) -> "Tree":
        names, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, path).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            dirs += [rel_dir + d for d in dirnames]
            names += [rel_dir + n for n in filenames if not n.startswith(".")]
        return cls(path, names, None, dirs)

    @classmethod
    def from_tar(cls, path: str) -> "Tree":
        files, dirs = {}, []
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    parts = [p for p in member.name.split("/") if p not in ("", ".")]
                    if any(p.startswith(".") for p in parts):
                        continue
                    if member.isdir():
                        dirs.append("/".join(parts))
                    elif member.isfile():
                        files["/".join(parts)] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise UsageError(
                f"{path}: cannot read the archive ({e.__class__.__name__}: {e}); it is truncated "
                "or corrupt: download it again (train_dist.py --download checks its MD5)") from e
        return cls(path, files, files, dirs)

    def names(self) -> List[str]:
        return self._names

    def read(self, rel: str) -> bytes:
        if self._data is None:
            return read_file(os.path.join(self.source, rel))
        return self._data[rel]

    def path(self, rel: str) -> Optional[str]:
        """The file on disk, or None inside an archive."""
        return os.path.join(self.source, rel) if self._data is None else None

    def where(self, rel: str) -> str:
        """How to name the file in a message."""
        return os.path.join(self.source, rel) if self._data is None else f"{self.source}:{rel}"


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from e


def is_archive(path: str) -> bool:
    return path.endswith(ARCHIVE_SUFFIXES)


def open_tree(path: str, what: str = "the data set") -> Tree:
    """The tree at --data_dir: a folder, an archive, or a folder holding just archive(s)."""
    if not os.path.exists(path):
        raise UsageError(f"--data_dir {path}: no such file or folder")
    if os.path.isfile(path):
        if not is_archive(path):
            raise UsageError(f"--data_dir {path}: a file, but not a .tar.gz archive; point it at "
                             f"{what}'s folder or archive")
        return Tree.from_tar(path)
    tree = Tree.from_dir(path)
    if not tree.names():
        raise UsageError(f"--data_dir {path}: the folder is empty; put {what} there "
                         "(or use --download)")
    archives = [n for n in tree.names() if "/" not in n and is_archive(n)]
    if archives and not any("/" in n for n in tree.names()):
        # A folder holding the downloaded archive(s) and no extracted copy: read the archive.
        preferred = sorted(archives, key=lambda n: ("python" not in n, "binary" not in n, n))
        return Tree.from_tar(os.path.join(path, preferred[0]))
    return tree
