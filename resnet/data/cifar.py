"""CIFAR-10 and CIFAR-100 in their official Python and binary layouts, into uint8 arrays.

  cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   cifar-10-python.tar.gz
  cifar-10-batches-bin/{data_batch_1..5.bin,test_batch.bin}       cifar-10-binary.tar.gz
  cifar-100-python/{train,test,meta}                              cifar-100-python.tar.gz
  cifar-100-binary/{train.bin,test.bin,fine_label_names.txt}      cifar-100-binary.tar.gz

CIFAR-100 has two labels per image: 100 fine classes and 20 coarse superclasses
(--label_mode). The image-folder layout of either is a class-folder tree (folders.py). Every
check names the file and says what is expected: a wrong folder must fail loudly here, not train
on garbage. Pickles go through safe_pickle, which runs no code.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from resnet.data import safe_pickle
from resnet.data.splits import DataSet, Split, subset
from resnet.data.tree import Tree, open_tree
from resnet.errors import UsageError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # CIFAR-10's label order 0..9
_PIXELS = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class Spec:
    """One official layout: the files that mark it and how its records are laid out."""
    name: str  # 'cifar10' or 'cifar100'
    encoding: str  # 'python' or 'binary'
    marker: str  # the file whose presence identifies the layout
    train: Tuple[str, ...]
    test: str
    meta: str  # class names: a pickle (python) or a text file (binary)
    label_bytes: int = 1  # binary: label bytes before each image (CIFAR-100: coarse, fine)

    @property
    def layout(self) -> str:
        return f"{self.name}-{self.encoding}"


_C10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
SPECS = (
    Spec("cifar10", "python", "data_batch_1", _C10_TRAIN, "test_batch", "batches.meta"),
    Spec("cifar10", "binary", "data_batch_1.bin", tuple(b + ".bin" for b in _C10_TRAIN),
         "test_batch.bin", "batches.meta.txt"),
    Spec("cifar100", "python", "train", ("train",), "test", "meta"),
    Spec("cifar100", "binary", "train.bin", ("train.bin",), "test.bin", "fine_label_names.txt",
         label_bytes=2),
)


def detect(tree: Tree) -> Optional[Tuple[Spec, str]]:
    """(spec, prefix) for the CIFAR layout in the tree (prefix: the folder holding it), or None.
    CIFAR-100's Python 'train' is told from other files called train by its 'meta' beside it."""
    names = set(tree.names())
    for rel in tree.names():
        head, _, base = rel.rpartition("/")
        prefix = head + "/" if head else ""
        for spec in SPECS:
            if base == spec.marker and (spec.name == "cifar10" or prefix + spec.meta in names
                                        or prefix + spec.test in names):
                return spec, prefix
    return None


def load_layout(tree: Tree, spec: Spec, prefix: str, label_mode: str = "fine",
                max_train: Optional[int] = None, max_test: Optional[int] = None) -> DataSet:
    _need(tree, [prefix + r for r in spec.train + (spec.test,)])
    read = _python_file if spec.encoding == "python" else _binary_file
    names = _class_names(tree, spec, prefix, label_mode)
    train = _concat([read(tree, prefix + r, spec, label_mode, len(names)) for r in spec.train])
    test = read(tree, prefix + spec.test, spec, label_mode, len(names))
    return DataSet(train=subset(train, max_train), test=subset(test, max_test),
                   class_names=names, layout=spec.layout, source=tree.source,
                   why="CIFAR is always held in memory (180 MB)")


def load(path: str, max_train: Optional[int] = None, max_test: Optional[int] = None,
         label_mode: str = "fine") -> DataSet:
    """CIFAR-10 or CIFAR-100 from a folder or archive in a Python or binary layout."""
    tree = open_tree(path, "CIFAR")
    found = detect(tree)
    if found is None:
        raise UsageError(f"{path}: no CIFAR-10 or CIFAR-100 batches found (expected "
                         "cifar-10-batches-py/, cifar-10-batches-bin/, cifar-100-python/ or "
                         "cifar-100-binary/, or a .tar.gz of one)")
    return load_layout(tree, *found, label_mode=label_mode, max_train=max_train,
                       max_test=max_test)


# --- Class names ------------------------------------------------------------------------------

def _class_names(tree: Tree, spec: Spec, prefix: str, label_mode: str) -> Tuple[str, ...]:
    if spec.name == "cifar10":
        return CLASS_NAMES  # batches.meta is optional in copies people make; the order is fixed
    rel = prefix + (spec.meta if spec.encoding == "python" or label_mode == "fine"
                    else "coarse_label_names.txt")
    _need(tree, [rel])
    where = tree.where(rel)
    if spec.encoding == "binary":
        names = [n.strip() for n in tree.read(rel).decode("utf-8", "replace").splitlines()]
        names = tuple(n for n in names if n)
    else:
        meta = _unpickle(tree, rel, "CIFAR-100 meta file")
        key = f"{label_mode}_label_names".encode()
        if not isinstance(meta, dict) or key not in meta:
            raise UsageError(f"{where}: not a CIFAR-100 meta file (no {key!r})")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])
    expected = 100 if label_mode == "fine" else 20
    if len(names) != expected:
        raise UsageError(f"{where}: {len(names)} class names, CIFAR-100 has {expected} "
                         f"{label_mode} classes; the copy is damaged: download it again")
    return names


# --- Records ----------------------------------------------------------------------------------

def _unpickle(tree: Tree, rel: str, what: str):
    where = tree.where(rel)
    try:
        return safe_pickle.loads(tree.read(rel))
    except safe_pickle.ForbiddenPickle as e:
        raise UsageError(f"{where}: not a {what}: the pickle {e}") from e
    except Exception as e:  # any unpickling failure means "not a CIFAR batch"
        raise UsageError(f"{where}: not a {what} ({e.__class__.__name__}: {e})") from e


def _check_labels(labels: np.ndarray, where: str, classes: int) -> np.ndarray:
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise UsageError(f"{where}: label {int(labels[bad][0])} at index {int(np.argmax(bad))} is "
                         f"outside 0..{classes - 1}; this is not a CIFAR file of this kind")
    return labels.astype(np.int32)


def _python_file(tree: Tree, rel: str, spec: Spec, label_mode: str, classes: int) -> Split:
    where = tree.where(rel)
    what = "CIFAR-10 Python batch" if spec.name == "cifar10" else "CIFAR-100 Python file"
    key = b"labels" if spec.name == "cifar10" else f"{label_mode}_labels".encode()
    batch = _unpickle(tree, rel, what)
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise UsageError(f"{where}: not a {what} (expected a dict with b'data' and {key!r})")
    data, labels = batch[b"data"], batch[key]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != _PIXELS):
        shape = getattr(data, "shape", type(data).__name__)
        raise UsageError(f"{where}: b'data' must be a uint8 array of shape (N, 3072), got {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{where}: {key!r} is not a list of integers") from e
    if labels.shape != (len(data),):
        raise UsageError(f"{where}: {len(data)} images but {labels.size} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-planar
    return Split(np.ascontiguousarray(images), _check_labels(labels, where, classes))


def _binary_file(tree: Tree, rel: str, spec: Spec, label_mode: str, classes: int) -> Split:
    where = tree.where(rel)
    raw = tree.read(rel)
    record = spec.label_bytes + _PIXELS
    if not raw or len(raw) % record:
        kind = "CIFAR-10" if spec.name == "cifar10" else "CIFAR-100"
        raise UsageError(f"{where}: {len(raw)} bytes is not a whole number of {record}-byte "
                         f"{kind} records ({spec.label_bytes} label byte(s), then 3072 pixels); "
                         f"the file is truncated or not a {kind} binary file")
    records = np.frombuffer(raw, np.uint8).reshape(-1, record)
    # CIFAR-100 records hold the coarse label, then the fine one.
    column = 0 if spec.label_bytes == 1 or label_mode == "coarse" else 1
    images = records[:, spec.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images),
                 _check_labels(records[:, column].astype(np.int64), where, classes))


def _concat(splits: Sequence[Split]) -> Split:
    if len(splits) == 1:
        return splits[0]
    return Split(np.concatenate([s.images for s in splits]),
                 np.concatenate([s.labels for s in splits]))


def _need(tree: Tree, rels: Sequence[str]) -> None:
    names = set(tree.names())
    missing = [r for r in rels if r not in names]
    if missing:
        raise UsageError(f"{tree.source}: missing {', '.join(missing)}; the CIFAR copy is "
                         "incomplete: download it again")
