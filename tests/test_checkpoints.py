"""Atomic checkpoints, keep-K, and falling back past a corrupt newest one."""

import os

import numpy as np
import tensorflow as tf

from resnet.training import checkpoints


def _state(epoch, step=0):
    return checkpoints.State(epoch=epoch, step=step, phase="full", config={"image_size": 32},
                             history=[{"epoch": epoch}])


def test_save_keep_and_latest(tmp_path):
    v = tf.Variable([1.0, 2.0])
    for epoch in range(1, 5):
        v.assign([epoch, epoch])
        checkpoints.save(str(tmp_path), {"v": v}, _state(epoch), keep=2)
    assert checkpoints.all_names(str(tmp_path)) == ["ckpt-0003-000000", "ckpt-0004-000000"]
    latest = checkpoints.latest(str(tmp_path))
    assert checkpoints.read_state(latest).epoch == 4
    w = tf.Variable([0.0, 0.0])
    checkpoints.restore(latest, {"v": w})
    np.testing.assert_array_equal(w.numpy(), [4, 4])
    # No temporary leftovers.
    assert not [n for n in os.listdir(checkpoints.directory(str(tmp_path))) if n.startswith(".")]


def test_corrupt_newest_falls_back(tmp_path, caplog):
    v = tf.Variable([1.0])
    checkpoints.save(str(tmp_path), {"v": v}, _state(1), keep=3)
    newest = checkpoints.save(str(tmp_path), {"v": v}, _state(2), keep=3)
    data = [f for f in os.listdir(newest) if f.startswith("vars.data")][0]
    with open(os.path.join(newest, data), "r+b") as f:
        f.write(b"garbage!")
    assert checkpoints.verify(newest) == f"{data} does not match its checksum"
    assert checkpoints.read_state(checkpoints.latest(str(tmp_path))).epoch == 1
    assert "is corrupt" in caplog.text


def test_partial_checkpoint_without_manifest_skipped(tmp_path):
    v = tf.Variable([1.0])
    checkpoints.save(str(tmp_path), {"v": v}, _state(1), keep=3)
    partial = os.path.join(checkpoints.directory(str(tmp_path)), "ckpt-0002-000000")
    os.makedirs(partial)
    assert checkpoints.read_state(checkpoints.latest(str(tmp_path))).epoch == 1
    # A temporary directory left by a kill is never taken for a checkpoint.
    os.makedirs(os.path.join(checkpoints.directory(str(tmp_path)), ".tmp-ckpt-0003-000000-x"))
    assert checkpoints.all_names(str(tmp_path)) == ["ckpt-0001-000000", "ckpt-0002-000000"]
