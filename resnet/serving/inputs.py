"""What batch inference scores, in input order: image files, folders of them (recursively, in
sorted order), tar archives of images (CIFAR-10's JPEG archive among them) and TFRecord files,
as many PATHs as given.

A folder or a TFRecord file is listed by name or record position only (a path, or an offset and
a length): its images are read as inference goes, so memory does not grow with their number. An
archive is read into memory as it is opened (gzip cannot seek), as for training.
"""

import dataclasses
import os
from typing import List, Optional

from resnet.data import images as images_lib
from resnet.data import tfrecords
from resnet.data.tree import Tree, is_archive
from resnet.errors import UsageError

FILE, RECORD, INLINE = 0, 1, 2  # how an entry's encoded bytes are had


@dataclasses.dataclass
class Inputs:
    """One row per image: `names` is what the output calls it (its path; ARCHIVE:MEMBER;
    RECORDS:N), the rest says where its encoded bytes are."""
    names: List[str]
    kinds: List[int]
    paths: List[str]  # a file, or the TFRecord file; "" inline
    offsets: List[int]
    lengths: List[int]
    inline: List[bytes]  # an archive member's bytes; b"" otherwise

    def __len__(self):
        return len(self.names)

    def add(self, name, kind, path="", offset=0, length=0, data=b""):
        for field, value in zip(("names", "kinds", "paths", "offsets", "lengths", "inline"),
                                (name, kind, path, offset, length, data)):
            getattr(self, field).append(value)

    def take(self, keep) -> "Inputs":
        keep = list(keep)
        return Inputs(*[[getattr(self, f.name)[i] for i in keep]
                        for f in dataclasses.fields(self)])

    def problem(self, i: int) -> Optional[str]:
        """What is wrong with entry i's bytes, judged from its first and last bytes (a truncated
        file, not an image at all), or None. Records were checked when written."""
        if self.kinds[i] == FILE:
            return images_lib.check_file(self.paths[i])[1]
        if self.kinds[i] == INLINE:
            return images_lib.check_data(self.inline[i])[1]
        return None


def _empty() -> Inputs:
    return Inputs([], [], [], [], [], [])


def _add_records(inputs: Inputs, path: str) -> None:
    offsets, lengths, _ = tfrecords.index_file(path, None)
    for n, (offset, length) in enumerate(zip(offsets, lengths)):
        inputs.add(f"{path}:{n}", RECORD, path, int(offset), int(length))


def _add_folder(inputs: Inputs, folder: str) -> None:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = os.path.join(dirpath, name)
            if images_lib.is_image_name(name):
                inputs.add(path, FILE, path)
            elif tfrecords.is_record_file(name):
                _add_records(inputs, path)


def _add_archive(inputs: Inputs, path: str) -> None:
    tree = Tree.from_tar(path)
    for member in tree.names():
        if images_lib.is_image_name(member):
            inputs.add(f"{path}:{member}", INLINE, data=tree.read(member))


def gather(paths: List[str]) -> Inputs:
    """Every image under `paths`, in order; a clear error for a path that is missing or holds
    no image."""
    if not paths:
        raise UsageError("no images given: name image files, folders, archives or TFRecord "
                         "files after the flags")
    inputs = _empty()
    for path in paths:
        before = len(inputs)
        if os.path.isdir(path):
            _add_folder(inputs, path)
        elif not os.path.exists(path):
            raise UsageError(f"{path}: no such file or folder")
        elif is_archive(path):
            _add_archive(inputs, path)
        elif tfrecords.is_record_file(os.path.basename(path)):
            _add_records(inputs, path)
        else:
            inputs.add(path, FILE, path)  # named on its own: scored, or refused as no image
        if len(inputs) == before:
            raise UsageError(f"{path}: holds no images ({', '.join(images_lib.EXTENSIONS)} "
                             "files, or TFRecords of them)")
    return inputs


def encoded(inputs: Inputs):
    """A tf.data.Dataset of each entry's encoded bytes, in order, read as it is iterated."""
    import tensorflow as tf
    from resnet.data.pipeline import record_image
    # Strings as tf.string from Python bytes, not numpy's: its fixed-width bytes drop trailing
    # NUL bytes, which an encoded image may end with.
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(inputs.kinds, tf.int32, shape=[len(inputs)]),
        tf.constant([p.encode("utf-8") for p in inputs.paths], tf.string, shape=[len(inputs)]),
        tf.constant(inputs.offsets, tf.int64, shape=[len(inputs)]),
        tf.constant(inputs.lengths, tf.int64, shape=[len(inputs)]),
        tf.constant(inputs.inline, tf.string, shape=[len(inputs)])))

    def read(kind, path, offset, length, data):
        return tf.switch_case(kind, [lambda: tf.io.read_file(path),
                                     lambda: record_image(path, offset, length),
                                     lambda: data])
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
