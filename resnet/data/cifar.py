"""Read CIFAR-10 from any of the three layouts users have, into uint8 arrays.

Layouts, detected from the path (a folder, or a .tar.gz of it):
  python       cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   (cifar-10-python.tar.gz)
  binary       cifar-10-batches-bin/{data_batch_1..5.bin,test_batch.bin}       (cifar-10-binary.tar.gz)
  imagefolder  {train,test}/<class>/*.{png,jpg,jpeg}

Every check names the file and says what is expected: a wrong folder must fail loudly here, not
train on garbage. Archives are read in memory, so nothing is extracted or half-written.
"""

import dataclasses
import io
import os
import tarfile
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from resnet.data import safe_pickle
from resnet.errors import UsageError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # the official label order 0..9
IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 32 * 32 * 3
_BIN_RECORD = 1 + _PIXELS  # one label byte, then 1024 red, 1024 green, 1024 blue
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_SUBSET_SEED = 20240601  # fixed: --max_*_examples picks the same images whatever --seed is


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB
    labels: np.ndarray  # (N,) int32 in [0, 10)

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Cifar10:
    train: Split
    test: Split
    layout: str
    source: str
    class_names: Tuple[str, ...] = CLASS_NAMES


# --- Reading files from a folder or an archive ----------------------------------------------

class _Tree:
    """The regular files under a folder, or inside a tar archive, by '/'-separated relative path."""

    def __init__(self, source: str, files: Dict[str, Callable[[], bytes]]):
        self.source = source
        self._files = files

    @classmethod
    def from_dir(cls, path: str) -> "_Tree":
        files = {}
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue  # .DS_Store and friends
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                files[rel] = (lambda f=full: _read_file(f))
        return cls(path, files)

    @classmethod
    def from_tar(cls, path: str) -> "_Tree":
        files = {}
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or any(p.startswith(".") and p not in (".", "..")
                                                  for p in parts):
                        continue
                    data = tar.extractfile(member).read()
                    files["/".join(p for p in parts if p not in ("", "."))] = (lambda d=data: d)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise UsageError(
                f"{path}: cannot read the archive ({e.__class__.__name__}: {e}); it is truncated "
                "or corrupt: download it again (train_dist.py --download checks its MD5)") from e
        return cls(path, files)

    def names(self) -> List[str]:
        return sorted(self._files)

    def read(self, rel: str) -> bytes:
        return self._files[rel]()

    def where(self, rel: str) -> str:
        return f"{self.source}:{rel}" if os.path.isfile(self.source) else os.path.join(
            self.source, rel)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from e


def _is_archive(path: str) -> bool:
    return path.endswith((".tar.gz", ".tgz", ".tar"))


# --- Layout detection -------------------------------------------------------------------------

def detect(tree: _Tree) -> Tuple[str, str]:
    """Return (layout, prefix): the layout found in the tree and the folder inside it that holds it."""
    names = tree.names()
    for rel in names:
        head, _, base = rel.rpartition("/")
        prefix = head + "/" if head else ""
        if base == "data_batch_1":
            return "python", prefix
        if base == "data_batch_1.bin":
            return "binary", prefix
    for rel in names:
        parts = rel.split("/")
        for i, part in enumerate(parts[:-2]):
            if part == "train" and rel.lower().endswith(_IMAGE_EXTENSIONS):
                return "imagefolder", "/".join(parts[:i]) + ("/" if i else "")
    raise UsageError(
        f"{tree.source}: no CIFAR-10 found. Expected one of: cifar-10-batches-py/ (data_batch_1.., "
        "test_batch), cifar-10-batches-bin/ (data_batch_1.bin.., test_batch.bin), train/<class>/ "
        "and test/<class>/ image folders, or a .tar.gz of any of them. Point --data_dir at it, or "
        "use --download")


def _open(path: str) -> _Tree:
    if not os.path.exists(path):
        raise UsageError(f"--data_dir {path}: no such file or folder")
    if os.path.isfile(path):
        if not _is_archive(path):
            raise UsageError(f"--data_dir {path}: a file, but not a .tar.gz archive; point it at "
                             "the CIFAR-10 folder or archive")
        return _Tree.from_tar(path)
    tree = _Tree.from_dir(path)
    if not tree.names():
        raise UsageError(f"--data_dir {path}: the folder is empty; put CIFAR-10 there "
                         "(or use --download)")
    archives = [n for n in tree.names() if "/" not in n and _is_archive(n)]
    has_layout = any(n.rsplit("/", 1)[-1] in ("data_batch_1", "data_batch_1.bin")
                     or n.startswith("train/") for n in tree.names())
    if archives and not has_layout:
        # A folder holding just the downloaded archive(s): read the archive.
        preferred = sorted(archives, key=lambda n: ("python" not in n, "binary" not in n, n))
        return _Tree.from_tar(os.path.join(path, preferred[0]))
    return tree


# --- The three layouts ------------------------------------------------------------------------

def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    bad = (labels < 0) | (labels >= len(CLASS_NAMES))
    if bad.any():
        raise UsageError(f"{where}: label {int(labels[bad][0])} at index {int(np.argmax(bad))} is "
                         "outside 0..9; this is not a CIFAR-10 file")
    return labels.astype(np.int32)


def _python_batch(tree: _Tree, rel: str) -> Split:
    where = tree.where(rel)
    try:
        batch = safe_pickle.loads(tree.read(rel))
    except safe_pickle.ForbiddenPickle as e:
        raise UsageError(f"{where}: not a CIFAR-10 batch: the pickle {e}") from e
    except Exception as e:  # any unpickling failure means "not a CIFAR batch"
        raise UsageError(f"{where}: not a CIFAR-10 Python batch ({e.__class__.__name__}: {e})"
                         ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UsageError(f"{where}: not a CIFAR-10 Python batch (expected a dict with "
                         "b'data' and b'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != _PIXELS):
        shape = getattr(data, "shape", type(data).__name__)
        raise UsageError(f"{where}: b'data' must be a uint8 array of shape (N, 3072), got {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: b'labels' is not a list of integers") from e
    if labels.shape != (len(data),):
        raise UsageError(f"{where}: {len(data)} images but {labels.size} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-planar
    return Split(np.ascontiguousarray(images), _check_labels(labels, where))


def _binary_batch(tree: _Tree, rel: str) -> Split:
    where = tree.where(rel)
    raw = tree.read(rel)
    if not raw or len(raw) % _BIN_RECORD:
        raise UsageError(f"{where}: {len(raw)} bytes is not a whole number of {_BIN_RECORD}-byte "
                         "CIFAR-10 records; the file is truncated or not a CIFAR-10 binary batch")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _BIN_RECORD)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), _check_labels(records[:, 0].astype(np.int64), where))


def _concat(splits: Sequence[Split]) -> Split:
    return Split(np.concatenate([s.images for s in splits]),
                 np.concatenate([s.labels for s in splits]))


def _need(tree: _Tree, rels: Sequence[str]) -> None:
    missing = [r for r in rels if r not in set(tree.names())]
    if missing:
        raise UsageError(f"{tree.source}: missing {', '.join(missing)}; the CIFAR-10 copy is "
                         "incomplete: download it again")


def _load_batches(tree, prefix, reader, suffix) -> Tuple[Split, Split]:
    train_rels = [prefix + b + suffix for b in _TRAIN_BATCHES]
    test_rel = prefix + "test_batch" + suffix
    _need(tree, train_rels + [test_rel])
    return _concat([reader(tree, r) for r in train_rels]), reader(tree, test_rel)


def _subset(split: Split, limit: Optional[int]) -> Split:
    if limit is None or limit >= len(split):
        return split
    keep = np.sort(np.random.RandomState(_SUBSET_SEED).permutation(len(split))[:limit])
    return Split(split.images[keep], split.labels[keep])


def _image_files(tree: _Tree, prefix: str, split: str) -> Tuple[List[str], np.ndarray]:
    by_class: Dict[str, List[str]] = {}
    root = f"{prefix}{split}/"
    for rel in tree.names():
        if rel.startswith(root):
            parts = rel[len(root):].split("/")
            if len(parts) == 2:
                by_class.setdefault(parts[0], []).append(rel)
    found = set(by_class)
    missing, extra = set(CLASS_NAMES) - found, found - set(CLASS_NAMES)
    if missing or extra:
        say = []
        if missing:
            say.append(f"missing class folder(s) {', '.join(sorted(missing))}")
        if extra:
            say.append(f"unexpected class folder(s) {', '.join(sorted(extra))}")
        raise UsageError(f"{tree.where(root)}: {'; '.join(say)}. CIFAR-10 needs exactly these 10: "
                         f"{', '.join(CLASS_NAMES)}")
    files, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        for rel in by_class[name]:
            if not rel.lower().endswith(_IMAGE_EXTENSIONS):
                raise UsageError(f"{tree.where(rel)}: not an image file (expected .png, .jpg or "
                                 ".jpeg); remove it from the data folder")
            files.append(rel)
            labels.append(label)
    return files, np.asarray(labels, np.int32)


def decode_image(data: bytes, where: str, size: Optional[int] = 32) -> np.ndarray:
    """Decode PNG/JPEG bytes to (H, W, 3) uint8 RGB; grayscale and RGBA are converted.

    With size set, an image of another size is refused (training data); predict passes size=None
    and resizes itself.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UsageError(f"{where}: cannot decode the image ({e}); replace or remove it") from e
    if size is not None and array.shape != (size, size, 3):
        raise UsageError(f"{where}: image is {array.shape[1]}x{array.shape[0]}, CIFAR-10 images "
                         f"are {size}x{size}; resize or remove it")
    return array


def _image_split(tree: _Tree, prefix: str, split: str, limit: Optional[int]) -> Split:
    files, labels = _image_files(tree, prefix, split)
    keep = np.arange(len(files))
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.RandomState(_SUBSET_SEED).permutation(len(files))[:limit])
    images = np.empty((len(keep),) + IMAGE_SHAPE, np.uint8)
    for out, i in enumerate(keep):
        images[out] = decode_image(tree.read(files[i]), tree.where(files[i]))
    return Split(images, labels[keep])


def load(path: str, max_train: Optional[int] = None, max_test: Optional[int] = None) -> Cifar10:
    """Read CIFAR-10 from a folder or archive in any of the three layouts."""
    tree = _open(path)
    layout, prefix = detect(tree)
    if layout == "imagefolder":
        train = _image_split(tree, prefix, "train", max_train)
        test = _image_split(tree, prefix, "test", max_test)
    else:
        reader, suffix = (_python_batch, "") if layout == "python" else (_binary_batch, ".bin")
        train, test = _load_batches(tree, prefix, reader, suffix)
        train, test = _subset(train, max_train), _subset(test, max_test)
    return Cifar10(train=train, test=test, layout=layout, source=path)
