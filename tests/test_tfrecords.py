"""TFRecords: the converter from a class-folder tree, reading them record by record (each rank
its shard), and every refusal named. The records are real TFRecord files (tf.io.TFRecordWriter)
of real tf.train.Examples, written by the tests."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import cifar_files
from conftest import ROOT, job_env
from resnet.config import Config
from resnet.data import pipeline, sharding, source, tfrecords
from resnet.errors import UsageError


def load(path, **flags):
    return source.open_data(str(path), Config(**flags))


@pytest.fixture()
def tree(tmp_path):
    index = cifar_files.write_tree(str(tmp_path / "tree"), ["ant", "bee", "cow"], 6,
                                   size=(72, 72), test_per_class=2, ext="png")
    return str(tmp_path / "tree"), index


@pytest.mark.slow  # the converter's command line: a TensorFlow subprocess
def test_converter_command_shards_and_reads_back(tmp_path, tree):
    root, index = tree
    out = tmp_path / "rec"
    proc = subprocess.run([sys.executable, "-m", "resnet.data.tfrecords", root, str(out),
                           "--shard_mb=0.002"], cwd=ROOT, env=job_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "18 train and 6 validation records, 3 classes" in proc.stdout
    names = sorted(os.listdir(out))
    shards = [n for n in names if n.startswith("train-")]
    assert len(shards) > 1 and all(n.endswith(f"-of-{len(shards):05d}") for n in shards)
    assert (out / "labels.txt").read_text().split() == ["ant", "bee", "cow"]
    data = load(out)
    assert data.layout == "tfrecords" and data.loading == "stream"
    assert data.class_names == ("ant", "bee", "cow") and len(data.train) == 18
    # Every record, read by offset through the pipeline, is the file it came from, with its label.
    shard = sharding.eval_shard(len(data.test), 0, 1, 3)
    got = []
    for x, y, _ in pipeline.eval_dataset(data.test, shard, 3, 3, image_size=48):
        for image, label in zip(x.numpy(), y.numpy()):
            got.append((cifar_files.index_of(image[24, 24]), int(label.argmax())))
    truth = {k: ("ant", "bee", "cow").index(p.split(os.sep)[-2])
             for p, k in index.items() if f"{os.sep}test{os.sep}" in p}
    assert sorted(got) == sorted(truth.items())


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_reads_its_records_once(tmp_path, tree, world):
    root, index = tree
    tfrecords.convert(root, str(tmp_path / "rec"), shard_mb=0.002)
    data = load(tmp_path / "rec")
    seen = []
    for rank in range(world):
        shard = sharding.train_shard(len(data.train), 1, 0, rank, world, 2)
        for x, _, w in pipeline.train_dataset(data.train, shard, 2, 1, 0, 3, image_size=32):
            seen += [cifar_files.index_of(im[16, 16]) for im, wt in zip(x.numpy(), w.numpy())
                     if wt]
    train = sorted(k for p, k in index.items() if f"{os.sep}train{os.sep}" in p)
    assert sorted(seen) == train


def test_converter_writes_whole_or_nothing(tmp_path, tree):
    root, _ = tree
    bad = os.path.join(root, "train", "bee", "0003.png")
    raw = open(bad, "rb").read()
    open(bad, "wb").write(raw[:len(raw) // 2])
    out = tmp_path / "rec"
    with pytest.raises(UsageError, match="bee/0003.png: truncated PNG"):
        tfrecords.convert(root, str(out))
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if "partial" in n]
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="taken: already exists"):
        tfrecords.convert(root, str(tmp_path / "taken"))


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as w:
        for feature in examples:
            w.write(tf.train.Example(features=tf.train.Features(feature=feature))
                    .SerializeToString())


def _feature(label=None, image=b"\x89PNG...", **extra):
    f = {}
    if image is not None:
        f["image/encoded"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
    if label is not None:
        f["image/class/label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return f


def _records(tmp_path, train, test=(1, 0), labels=("a", "b")):
    folder = tmp_path / "r"
    folder.mkdir()
    _write(folder / "train-00000-of-00001", train)
    _write(folder / "validation-00000-of-00001", [_feature(label) for label in test])
    if labels:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return folder


def test_label_outside_the_classes(tmp_path):
    folder = _records(tmp_path, [_feature(0), _feature(1), _feature(2)])
    with pytest.raises(UsageError, match=r"train-00000-of-00001: record 2 has label 2, outside "
                                         r"0..1 \(2 classes in labels.txt\)"):
        load(folder)


def test_missing_field(tmp_path):
    folder = _records(tmp_path, [_feature(0), _feature(1, image=None)])
    with pytest.raises(UsageError, match="record 1 has no image/encoded field"):
        load(folder)
    folder2 = tmp_path / "x"
    folder2.mkdir()
    _write(folder2 / "train-00000-of-00001", [_feature(None)])
    _write(folder2 / "validation-00000-of-00001", [_feature(0)])
    with pytest.raises(UsageError, match="record 0 has no image/class/label field"):
        load(folder2)


def test_truncated_record_file_and_no_validation(tmp_path):
    folder = _records(tmp_path, [_feature(0), _feature(1)])
    path = folder / "train-00000-of-00001"
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    with pytest.raises(UsageError, match="train-00000-of-00001: record 1 is cut short"):
        load(folder)
    os.unlink(path)
    _write(path, [_feature(0), _feature(1)])
    os.unlink(folder / "validation-00000-of-00001")
    with pytest.raises(UsageError, match="no validation-\\* \\(or test-\\*\\) ones"):
        load(folder)


def test_without_labels_file_classes_are_numbered(tmp_path):
    folder = _records(tmp_path, [_feature(0), _feature(2)], labels=None)
    data = load(folder)
    assert data.class_names == ("0", "1", "2")
    assert data.train.labels.tolist() == [0, 2]
    assert np.all(data.train.lengths > 0)


def test_memory_is_refused_for_tfrecords(tmp_path, tree):
    root, _ = tree
    tfrecords.convert(root, str(tmp_path / "rec"))
    with pytest.raises(UsageError, match="TFRecords are always streamed"):
        from resnet.data.source import _check
        from resnet.runtime.world import World
        config = Config(data_loading="memory")
        _check(load(tmp_path / "rec"), config, World(0, 1, 0, 1, "h", 1, 1))
