"""The whole job on data sets other than CIFAR-10: a streamed class-folder tree and TFRecords
trained in-process (a world of one), --eval_only, predict with the data set's class names; and
a refused data set exits 2 with the file named and nothing written."""

import json
import os
import subprocess
import sys

import pytest

import cifar_files
from conftest import ROOT, job_env
from resnet.config import Config
from resnet.data import tfrecords
from resnet.errors import UsageError
from resnet.serving.batch import predict
from resnet.training import job

# Whole trainings (in-process) and refusals through train_dist.py: the slow tier.
pytestmark = pytest.mark.slow

CLASSES = ["circle", "square", "star", "wave"]


def _config(data_dir, model_dir, **extra):
    return Config(data_dir=str(data_dir), weights="none", image_size=40, batch_size=4, epochs=1,
                  warmup_epochs=0, model_dir=str(model_dir), hang_timeout=0, **extra)


def test_streamed_tree_trains_evaluates_and_predicts(tmp_path, restored_process_state):
    cifar_files.write_tree(str(tmp_path / "tree"), CLASSES, 5, test_per_class=2, ext="jpg",
                           sizes=[(70, 50), (64, 90), (100, 100)])
    config = _config(tmp_path / "tree", tmp_path / "m")
    metrics = job.run(config)
    assert metrics["test_examples"] == 8 and metrics["num_train_examples"] == 20
    assert sorted(metrics["per_class_accuracy"]) == CLASSES
    assert len(metrics["confusion_matrix"]) == 4
    assert json.loads((tmp_path / "m" / "class_names.json").read_text()) == CLASSES
    again = job.run(Config(**{**config.to_dict(), "eval_only": True}))
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    # Batch inference of the test folder prepares each image as the evaluation did: its top
    # classes give the evaluation's confusion matrix, row by row.
    out = tmp_path / "scores.jsonl"
    stats = predict(str(tmp_path / "m"), [str(tmp_path / "tree" / "test")], str(out), top=4)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats["images"] == len(rows) == 8 and stats["skipped"] == 0
    assert rows[0]["path"] == str(tmp_path / "tree" / "test" / "circle" / "0000.jpg")
    assert all(sorted(r["classes"]) == CLASSES for r in rows)
    confusion = [[0] * 4 for _ in CLASSES]
    for r in rows:
        confusion[CLASSES.index(r["path"].split(os.sep)[-2])][CLASSES.index(r["classes"][0])] += 1
    assert confusion == metrics["confusion_matrix"]


def test_tfrecords_train_and_eval_only(tmp_path, restored_process_state):
    cifar_files.write_tree(str(tmp_path / "tree"), CLASSES, 4, size=(72, 72))
    tfrecords.convert(str(tmp_path / "tree"), str(tmp_path / "rec"), shard_mb=0.001,
                      validation_fraction=0.25)
    config = _config(tmp_path / "rec", tmp_path / "m")
    metrics = job.run(config)
    assert metrics["test_examples"] == 4 and metrics["num_train_examples"] == 12
    again = job.run(Config(**{**config.to_dict(), "eval_only": True}))
    assert again["test_accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize("damage", ["truncated", "one-class"])
def test_refused_data_exits_2_and_writes_nothing(tmp_path, damage):
    cifar_files.write_tree(str(tmp_path / "tree"), CLASSES[:1] if damage == "one-class"
                           else CLASSES, 3, size=(64, 64), test_per_class=1, ext="jpg")
    if damage == "truncated":
        bad = tmp_path / "tree" / "test" / "wave" / "0000.jpg"
        bad.write_bytes(bad.read_bytes()[:200])
    proc = subprocess.run([sys.executable, "train_dist.py", "--weights=none",
                           f"--data_dir={tmp_path}/tree", f"--model_dir={tmp_path}/m"],
                          cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    expected = ("test/wave/0000.jpg: truncated JPEG" if damage == "truncated"
                else "1 class folder(s) (circle); a classifier needs at least 2")
    assert expected in proc.stderr
    assert not os.path.exists(tmp_path / "m")


def test_model_dir_of_another_data_set_is_refused(tmp_path, restored_process_state):
    cifar_files.write_tree(str(tmp_path / "four"), CLASSES, 3, size=(64, 64), test_per_class=1)
    cifar_files.write_tree(str(tmp_path / "two"), CLASSES[:2], 3, size=(64, 64),
                           test_per_class=1)
    job.run(_config(tmp_path / "four", tmp_path / "m"))
    with pytest.raises(UsageError, match="model has 4 classes, the data set has 2.*new --model_dir"):
        job.run(_config(tmp_path / "two", tmp_path / "m"))
