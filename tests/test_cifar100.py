"""CIFAR-100 in its official Python and binary layouts: fine and coarse labels, class names from
its meta files, the restricted unpickler, and the refusals."""

import os
import pickle

import numpy as np
import pytest

import cifar_files
from resnet.config import Config
from resnet.data import cifar, locate, source
from resnet.errors import UsageError


@pytest.fixture(scope="module")
def splits100():
    return cifar_files.make_split100(300, seed=3), cifar_files.make_split100(60, seed=4)


@pytest.mark.parametrize("writer,layout", [(cifar_files.write_python100, "cifar100-python"),
                                           (cifar_files.write_binary100, "cifar100-binary")])
def test_fine_and_coarse_labels_and_names(tmp_path, splits100, writer, layout):
    folder = writer(str(tmp_path), *splits100)
    (train_x, fine, coarse), (test_x, test_fine, _) = splits100
    data = source.open_data(folder, Config())
    assert data.layout == layout and data.class_names == cifar_files.C100_FINE
    np.testing.assert_array_equal(data.train.images, train_x)
    np.testing.assert_array_equal(data.train.labels, fine)
    np.testing.assert_array_equal(data.test.labels, test_fine)
    assert data.input_size(96) == 32
    coarse_data = source.open_data(folder, Config(label_mode="coarse"))
    assert coarse_data.class_names == cifar_files.C100_COARSE
    np.testing.assert_array_equal(coarse_data.train.labels, coarse)
    # The archive as downloaded, and the folder holding it.
    name = "cifar-100-python" if "python" in layout else "cifar-100-binary"
    archive = cifar_files.make_tar(folder, str(tmp_path / f"{name}.tar.gz"), name)
    np.testing.assert_array_equal(cifar.load(archive).train.labels, fine)


def test_cifar100_binary_wrong_record_length(tmp_path, splits100):
    folder = cifar_files.write_binary100(str(tmp_path), *splits100)
    with open(os.path.join(folder, "test.bin"), "ab") as f:
        f.write(b"\0" * 3073)  # a CIFAR-10-sized record: one label byte short
    with pytest.raises(UsageError, match=r"test.bin: \d+ bytes is not a whole number of "
                                         r"3074-byte CIFAR-100 records"):
        cifar.load(folder)


def test_cifar100_label_out_of_range(tmp_path, splits100):
    folder = cifar_files.write_binary100(str(tmp_path), *splits100)
    path = os.path.join(folder, "train.bin")
    raw = bytearray(open(path, "rb").read())
    raw[3074 + 1] = 100  # record 1's fine label
    open(path, "wb").write(bytes(raw))
    with pytest.raises(UsageError, match="train.bin: label 100 at index 1 is outside 0..99"):
        cifar.load(folder)
    raw[3074 + 1], raw[0] = 5, 20  # record 0's coarse label: fine with fine labels
    open(path, "wb").write(bytes(raw))
    assert len(cifar.load(folder).train) == 300
    with pytest.raises(UsageError, match="label 20 at index 0 is outside 0..19"):
        cifar.load(folder, label_mode="coarse")


def test_cifar100_python_refusals(tmp_path, splits100):
    folder = cifar_files.write_python100(str(tmp_path), *splits100)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    with open(os.path.join(folder, "train"), "wb") as f:
        pickle.dump({b"data": Evil()}, f, protocol=2)
    with pytest.raises(UsageError, match="train: not a CIFAR-100 Python file.*refused, not run"):
        cifar.load(folder)
    assert not (tmp_path / "pwned").exists()
    with open(os.path.join(folder, "train"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(UsageError, match="expected a dict with b'data' and b'fine_labels'"):
        cifar.load(folder)
    os.unlink(os.path.join(folder, "meta"))
    with pytest.raises(UsageError, match="missing .*meta"):
        cifar.load(folder)


def test_dataset_flag_insists_and_label_mode_is_cifar100_only(tmp_path, splits, splits100):
    c100 = cifar_files.write_python100(str(tmp_path / "a"), *splits100)
    c10 = cifar_files.write_python(str(tmp_path / "b"), *splits)
    from resnet.data.source import _check
    from resnet.runtime.world import World
    world = World(0, 1, 0, 1, "h", 1, 1)
    with pytest.raises(UsageError, match="--dataset=cifar10, but .* holds a cifar100-python"):
        _check(source.open_data(c100, Config()), Config(dataset="cifar10"), world)
    with pytest.raises(UsageError, match="--label_mode=coarse is for CIFAR-100"):
        _check(source.open_data(c10, Config()), Config(label_mode="coarse"), world)


def test_download_knows_the_cifar100_archive(tmp_path, monkeypatch):
    archive = locate.ARCHIVES["cifar100"]
    assert archive.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert archive.md5 == "eb9058c3a382ffc7106e4002c42a8d85"  # published on the same page
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CIFAR100_DIR", raising=False)
    with pytest.raises(UsageError, match="CIFAR-100 not found.*CIFAR100_DIR.*cifar-100-python"):
        locate.find(None, "cifar100")
    cache = tmp_path / ".keras" / "datasets" / "cifar-100-python"
    cache.mkdir(parents=True)
    assert locate.find(None, "cifar100") == str(cache)


def test_confusion_picture_gives_each_of_100_classes_room(tmp_path):
    from PIL import Image
    from resnet.training import report
    confusion = np.eye(100, dtype=int) * 50 + 1
    report.plot_confusion(confusion.tolist(), cifar_files.C100_FINE, str(tmp_path / "c.png"))
    report.plot_confusion(np.eye(10, dtype=int).tolist(), cifar_files.CLASS_NAMES,
                          str(tmp_path / "c10.png"))
    width, height = Image.open(tmp_path / "c.png").size
    assert width >= 100 * 14 and height >= 100 * 14  # a row of pixels per name, at least 14
    assert Image.open(tmp_path / "c10.png").size[0] < width / 2


def test_download_of_cifar100_checks_its_own_md5(tmp_path, splits100, served):
    """A mirror serving a CIFAR-100 archive that is not the official one: refused by the
    official CIFAR-100 MD5, nothing kept (a real HTTP server on loopback)."""
    www, base = served
    folder = cifar_files.write_python100(str(tmp_path / "src"), *splits100)
    cifar_files.make_tar(folder, str(www / "cifar-100-python.tar.gz"), "cifar-100-python")
    with pytest.raises(UsageError, match="expected eb9058c3a382ffc7106e4002c42a8d85"):
        locate.fetch("cifar100", str(tmp_path / "dest"), f"{base}/cifar-100-python.tar.gz")
    assert os.listdir(tmp_path / "dest") == []
