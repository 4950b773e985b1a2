"""TFRecords of tf.train.Example images, as the TF Model Garden and Intel's ImageNet scripts
write them, and a converter from a class-folder tree (`python -m resnet.data.tfrecords`).

Layout: files named train-*, and validation-* (or test-*), e.g. train-00000-of-00004, with an
optional labels.txt beside them (class i's name on line i; without it the classes are named by
number, as many as the largest label + 1). Each record holds at least
  image/encoded        bytes   a JPEG or PNG
  image/class/label    int64   0 .. classes - 1
The converter also writes image/format, image/class/text, image/filename, image/height and
image/width.

Opening the data set indexes every record: where it starts in its file and its label, checked
against the class count. Training then reads each rank's records by offset, so the same
exactly-once dealing as for files applies record by record, and a rank holds only the index.
(Model Garden's ImageNet files number the classes from 1, with 0 for "background": those need
their labels shifted, which this reader does not do.)
"""

import argparse
import mmap
import os
import re
import shutil
import struct
import sys
import tempfile
from typing import List, Optional, Tuple

import numpy as np

from resnet.data.splits import DataSet, StreamSplit, subset
from resnet.errors import UsageError

ENCODED, LABEL = "image/encoded", "image/class/label"
LABELS_FILE = "labels.txt"
_TRAIN = re.compile(r"^train[-_.]")
_TEST = re.compile(r"^(validation|val|test)[-_.]")
_HEADER = 12  # uint64 length, uint32 masked CRC of the length; then data, uint32 masked CRC


def is_record_file(base: str) -> bool:
    return bool(re.search(r"-\d+-of-\d+$", base) or "tfrecord" in base.lower())


def detect(names: List[str]) -> Optional[str]:
    """The prefix of the folder holding train-* record files, or None."""
    for rel in names:
        head, _, base = rel.rpartition("/")
        if _TRAIN.match(base) and is_record_file(base):
            return head + "/" if head else ""
    return None


def _files(folder: str, pattern) -> List[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if pattern.match(n) and is_record_file(n))


def _class_names(folder: str) -> Optional[Tuple[str, ...]]:
    path = os.path.join(folder, LABELS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if len(names) < 2:
        raise UsageError(f"{path}: {len(names)} class name(s); a classifier needs at least 2")
    return names


def index_file(path: str, classes: Optional[int]):
    """(offsets, lengths, labels) of every record in one file, each checked."""
    import tensorflow as tf
    offsets, lengths, labels = [], [], []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        pos, n = 0, 0
        while pos < size:
            if pos + _HEADER > size:
                raise UsageError(f"{path}: record {n} is cut short (the file is truncated); "
                                 "copy or convert it again")
            (length,) = struct.unpack_from("<Q", data, pos)
            start = pos + _HEADER
            if start + length + 4 > size:
                raise UsageError(f"{path}: record {n} is cut short (it says {length} bytes, the "
                                 "file ends first): the file is truncated; copy or convert it "
                                 "again")
            try:
                example = tf.train.Example.FromString(data[start:start + length])
            except Exception as e:  # protobuf's DecodeError: not an Example
                raise UsageError(f"{path}: record {n} is not a tf.train.Example ({e})") from e
            feature = example.features.feature
            for name, kind in ((ENCODED, "bytes_list"), (LABEL, "int64_list")):
                values = getattr(feature[name], kind).value if name in feature else []
                if len(values) != 1:
                    raise UsageError(f"{path}: record {n} has no {name} field (one {kind} value "
                                     f"expected); write the records with {ENCODED} and {LABEL}, "
                                     "e.g. with python -m resnet.data.tfrecords")
            label = feature[LABEL].int64_list.value[0]
            if label < 0 or (classes is not None and label >= classes):
                raise UsageError(f"{path}: record {n} has label {label}, outside 0.."
                                 f"{(classes or 1) - 1} ({classes} classes in {LABELS_FILE}); "
                                 "fix the labels or labels.txt")
            offsets.append(start)
            lengths.append(length)
            labels.append(label)
            pos, n = start + length + 4, n + 1
        data.close()
    return (np.asarray(offsets, np.int64), np.asarray(lengths, np.int64),
            np.asarray(labels, np.int64))


def _split(files: List[str], classes: Optional[int]) -> StreamSplit:
    paths, offsets, lengths, labels = [], [], [], []
    for path in files:
        o, length, lab = index_file(path, classes)
        paths += [path] * len(o)
        offsets.append(o)
        lengths.append(length)
        labels.append(lab)
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts
           else np.zeros(0, dtype))
    return StreamSplit(np.asarray(paths, dtype=object), cat(labels, np.int32),
                       cat(offsets, np.int64), cat(lengths, np.int64))


def load(folder: str, max_train: Optional[int] = None,
         max_test: Optional[int] = None) -> DataSet:
    names = _class_names(folder)
    train_files, test_files = _files(folder, _TRAIN), _files(folder, _TEST)
    if not test_files:
        raise UsageError(f"{folder}: train-* TFRecords but no validation-* (or test-*) ones; "
                         "the job evaluates on a held-out split: write one (python -m "
                         "resnet.data.tfrecords FOLDER OUT does)")
    classes = len(names) if names else None
    train, test = _split(train_files, classes), _split(test_files, classes)
    if not len(train) or not len(test):
        raise UsageError(f"{folder}: the {'train' if not len(train) else 'validation'} "
                         "TFRecords hold no records")
    if names is None:
        top = int(max(train.labels.max(), test.labels.max()))
        names = tuple(str(i) for i in range(top + 1))
    return DataSet(train=subset(train, max_train), test=subset(test, max_test),
                   class_names=names, layout="tfrecords", source=folder, loading="stream",
                   why="TFRecords are read record by record as training goes")


# --- The converter ----------------------------------------------------------------------------

def _example(data: bytes, label: int, name: str, filename: str, size):
    import tensorflow as tf
    f = tf.train.Feature
    width, height = size or (0, 0)
    fmt = b"PNG" if data[:4] == b"\x89PNG" else b"JPEG"
    return tf.train.Example(features=tf.train.Features(feature={
        ENCODED: f(bytes_list=tf.train.BytesList(value=[data])),
        "image/format": f(bytes_list=tf.train.BytesList(value=[fmt])),
        LABEL: f(int64_list=tf.train.Int64List(value=[label])),
        "image/class/text": f(bytes_list=tf.train.BytesList(value=[name.encode()])),
        "image/filename": f(bytes_list=tf.train.BytesList(value=[filename.encode()])),
        "image/height": f(int64_list=tf.train.Int64List(value=[height])),
        "image/width": f(int64_list=tf.train.Int64List(value=[width])),
    })).SerializeToString()


def _write_split(tree, split, prefix: str, out: str, shard_bytes: int, names) -> int:
    """Write one split's records into files of about shard_bytes each; returns the count."""
    import tensorflow as tf
    from resnet.data import images
    files, labels = split
    parts, writer, written = [], None, 0
    rng = np.random.RandomState(0)  # shuffled once: a file then holds many classes
    for i in rng.permutation(len(files)):
        if writer is None or written >= shard_bytes:
            if writer:
                writer.close()
            parts.append(os.path.join(out, f".{prefix}-{len(parts):05d}"))
            writer, written = tf.io.TFRecordWriter(parts[-1]), 0
        data = tree.read(files[i])
        size, problem = images.check_data(data)
        if problem:
            raise UsageError(f"{tree.where(files[i])}: {problem}; replace or remove it")
        record = _example(data, int(labels[i]), names[labels[i]], files[i], size)
        writer.write(record)
        written += len(record) + 16
    if writer:
        writer.close()
    for k, part in enumerate(parts):
        os.rename(part, os.path.join(out, f"{prefix}-{k:05d}-of-{len(parts):05d}"))
    return len(files)


def convert(source: str, out: str, shard_mb: float = 100, validation_fraction: float = 0.1):
    """A class-folder tree (folder or archive) to TFRecords in `out`, written whole or not at
    all: into a temporary folder beside it, renamed at the end."""
    from resnet.data import folders, tree as tree_lib
    if os.path.exists(out):
        raise UsageError(f"{out}: already exists; give a new folder (nothing was written)")
    tree = tree_lib.open_tree(source, "a class-folder tree")
    prefix = folders.detect(tree)
    if prefix is None:
        raise UsageError(f"{source}: no train/<class>/ image folders found")
    train_by, test_by, _ = folders.split_classes(tree, prefix, validation_fraction)
    names = tuple(sorted(train_by))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        counts = {}
        for prefix_name, by in (("train", train_by), ("validation", test_by)):
            counts[prefix_name] = _write_split(tree, folders.flatten(by, names), prefix_name, tmp,
                                               int(shard_mb * 2**20), names)
        with open(os.path.join(tmp, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
        os.rename(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return counts, names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m resnet.data.tfrecords",
        description="Convert a class-folder tree (train/<class>/*.jpg|png, and test/ or val/) "
        "to TFRecords (train-*-of-*, validation-*-of-*, labels.txt) that train_dist.py reads.")
    p.add_argument("folder", help="the tree: a folder or .tar.gz")
    p.add_argument("out", help="a new folder for the TFRecords")
    p.add_argument("--shard_mb", type=float, default=100,
                   help="start a new file after this many MiB (default 100)")
    p.add_argument("--validation_fraction", type=float, default=0.1,
                   help="with no test/ or val/ folder: the share of each class held out")
    args = p.parse_args(argv)
    try:
        counts, names = convert(args.folder, args.out, args.shard_mb, args.validation_fraction)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['train']} train and {counts['validation']} validation records, "
          f"{len(names)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
