"""CIFAR-10's Python and binary layouts, read from small files in the official formats, and
their refusals (CIFAR-100: test_cifar100.py; image-folder trees: test_folders.py)."""

import os
import pickle
import shutil

import numpy as np
import pytest

import cifar_files
from resnet.data import cifar
from resnet.errors import UsageError


def _same(data, splits):
    (train_x, train_y), (test_x, test_y) = splits
    # Image folders are read class by class; compare as sets of (label, image) pairs.
    def key(images, labels):
        return sorted((int(l), im.tobytes()) for im, l in zip(images, labels))
    assert key(data.train.images, data.train.labels) == key(train_x, train_y)
    assert key(data.test.images, data.test.labels) == key(test_x, test_y)


def test_python_batches_folder_and_archive(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    data = cifar.load(folder)
    assert data.layout == "cifar10-python"
    # Batches keep their order: exact arrays, not just the same set.
    np.testing.assert_array_equal(data.train.images, splits[0][0])
    np.testing.assert_array_equal(data.train.labels, splits[0][1])
    np.testing.assert_array_equal(data.test.images, splits[1][0])
    archive = cifar_files.make_tar(folder, str(tmp_path / "cifar-10-python.tar.gz"),
                                   "cifar-10-batches-py")
    _same(cifar.load(archive), splits)
    # The parent folder of the extracted batches, and a folder holding just the archive.
    _same(cifar.load(str(tmp_path)), splits)
    only = tmp_path / "download"
    only.mkdir()
    shutil.copy(archive, only)
    assert cifar.load(str(only)).layout == "cifar10-python"


def test_binary_batches_folder_and_archive(tmp_path, splits):
    folder = cifar_files.write_binary(str(tmp_path), *splits)
    data = cifar.load(folder)
    assert data.layout == "cifar10-binary"
    np.testing.assert_array_equal(data.train.images, splits[0][0])
    np.testing.assert_array_equal(data.test.labels, splits[1][1])
    archive = cifar_files.make_tar(folder, str(tmp_path / "cifar-10-binary.tar.gz"),
                                   "cifar-10-batches-bin")
    assert cifar.load(archive).layout == "cifar10-binary"
    _same(cifar.load(archive), splits)


def test_subsets_are_fixed_and_balanced_enough(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    a = cifar.load(folder, max_train=30, max_test=10)
    b = cifar.load(folder, max_train=30, max_test=10)
    assert len(a.train) == 30 and len(a.test) == 10
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert len(set(a.train.labels.tolist())) > 5  # a random subset, not the first class


def test_crafted_pickle_does_not_run_code(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(os.path.join(folder, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UsageError, match=r"data_batch_3: not a CIFAR-10 Python batch.*(posix|os)\.system"):
        cifar.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", [
    ([1, 2, 3], "expected a dict"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "label 12 .* outside 0..9"),
])
def test_python_batch_that_is_not_cifar(tmp_path, splits, payload, message):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump(payload, f, protocol=2)
    with pytest.raises(UsageError, match=message):
        cifar.load(folder)


def test_python_batch_that_is_not_a_pickle(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    with open(os.path.join(folder, "data_batch_2"), "wb") as f:
        f.write(b"this is plain text")
    with pytest.raises(UsageError, match="data_batch_2: not a CIFAR-10 Python batch"):
        cifar.load(folder)


def test_binary_batch_of_wrong_length(tmp_path, splits):
    folder = cifar_files.write_binary(str(tmp_path), *splits)
    path = os.path.join(folder, "data_batch_4.bin")
    with open(path, "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(UsageError, match=r"data_batch_4.bin: \d+ bytes is not a whole number"):
        cifar.load(folder)


def test_binary_label_out_of_range(tmp_path, splits):
    folder = cifar_files.write_binary(str(tmp_path), *splits)
    path = os.path.join(folder, "test_batch.bin")
    raw = bytearray(open(path, "rb").read())
    raw[0] = 10
    open(path, "wb").write(bytes(raw))
    with pytest.raises(UsageError, match="test_batch.bin: label 10 at index 0 is outside 0..9"):
        cifar.load(folder)


def test_missing_batch_file(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    os.remove(os.path.join(folder, "data_batch_5"))
    with pytest.raises(UsageError, match="missing .*data_batch_5"):
        cifar.load(folder)


def test_truncated_archive(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path), *splits)
    archive = cifar_files.make_tar(folder, str(tmp_path / "c.tar.gz"), "cifar-10-batches-py")
    raw = open(archive, "rb").read()
    open(archive, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(UsageError, match="c.tar.gz: cannot read the archive.*truncated"):
        cifar.load(archive)


def test_missing_empty_and_wrong_folders(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        cifar.load(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="the folder is empty"):
        cifar.load(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("hi")
    with pytest.raises(UsageError, match="no CIFAR-10 or CIFAR-100 batches found"):
        cifar.load(str(tmp_path / "other"))
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(UsageError, match="not a .tar.gz archive"):
        cifar.load(str(tmp_path / "file.txt"))
