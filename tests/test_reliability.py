"""Killed, pre-empted and diverging runs: what survives, and that a resumed run ends where an
uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, job_env, run_job

# Each test starts real jobs (TensorFlow, launchers): the slow tier (pytest -m 'not slow'
# leaves them out; .ci/run runs them).
# One xdist worker for the module: the tests share the uninterrupted run, made once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]

COMMON = ["--weights=none", "--image_size=32", "--batch_size=8", "--learning_rate=0.001",
          "--epochs=2", "--log_every_steps=1", "--max_train_examples=48"]


def _args(image_tar, model_dir):
    return COMMON + [f"--data_dir={image_tar}", f"--model_dir={model_dir}"]


def _weights(model_dir):
    import tensorflow as tf
    m = tf.keras.models.load_model(os.path.join(model_dir, "model.keras"))
    return m.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(image_tar, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("baseline") / "m")
    run_job(_args(image_tar, model_dir))
    return model_dir


def _start(image_tar, model_dir, script="train_dist.py", **env):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, script)] +
                            _args(image_tar, model_dir), cwd=ROOT, env=job_env(**env),
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc, text):
    """The log up to the first line with `text`; the job's own end if it never comes."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"exited before {text!r}:\n{''.join(seen)[-3000:]}")


def _same_result(model_dir, baseline):
    got = json.load(open(os.path.join(model_dir, "metrics.json")))
    want = json.load(open(os.path.join(baseline, "metrics.json")))
    assert [h["epoch"] for h in got["history"]] == [1, 2]
    assert got["test_accuracy"] == want["test_accuracy"]
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)
    for a, b in zip(_weights(model_dir), _weights(baseline)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sigkill_after_epoch_1_then_resume_ends_as_uninterrupted(tmp_path, image_tar,
                                                                 uninterrupted):
    model_dir = tmp_path / "m"
    proc = _start(image_tar, model_dir)
    _wait_for(proc, "epoch 2/2 step 1/")  # epoch 1's checkpoint is on disk by now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert os.listdir(model_dir / "checkpoints") == ["ckpt-0001-000000"]
    assert not (model_dir / "metrics.json").exists()
    log = run_job(_args(image_tar, model_dir)).stderr
    assert "epoch 2, step 0" in log
    _same_result(str(model_dir), uninterrupted)


def test_sigusr1_mid_epoch_checkpoints_and_resume_ends_as_uninterrupted(tmp_path, image_tar,
                                                                        uninterrupted):
    # The signal comes from inside the job after step 2 of 6 (tests/signal_at_step.py), so it
    # lands mid-epoch however fast the machine runs the steps.
    model_dir = tmp_path / "m"
    proc = _start(image_tar, model_dir, "tests/signal_at_step.py", SIGNAL_AFTER_STEP="2")
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 3, rest[-3000:]
    assert "checkpoint written, run the same command to resume" in rest
    # Asked during step 2's end (after the stop check of that step): step 3 is the last.
    assert os.listdir(model_dir / "checkpoints") == ["ckpt-0000-000003"]
    step = 3
    log = run_job(_args(image_tar, model_dir)).stderr
    assert f"epoch 1, step {step}" in log
    assert f"epoch 1/2 step {step + 1}/" in log and f"epoch 1/2 step {step}/" not in log
    _same_result(str(model_dir), uninterrupted)


def test_nan_loss_stops_keeps_last_good_checkpoint(tmp_path, image_tar):
    model_dir = tmp_path / "m"
    args = [a for a in _args(image_tar, model_dir) if not a.startswith("--epochs")]
    run_job(args + ["--epochs=1"])
    good = sorted(os.listdir(model_dir / "checkpoints"))
    proc = run_job([a for a in args if not a.startswith("--learning_rate")] +
                   ["--epochs=2", "--learning_rate=1e12"], check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "loss is nan" in proc.stderr or "loss is inf" in proc.stderr
    assert "lower --learning_rate" in proc.stderr
    assert sorted(os.listdir(model_dir / "checkpoints")) == good
    assert json.load(open(model_dir / "metrics.json"))["history"][-1]["epoch"] == 1


def test_checkpoint_every_steps_inside_an_epoch(tmp_path, image_tar):
    model_dir = tmp_path / "m"
    args = [a for a in _args(image_tar, model_dir) if not a.startswith("--epochs")]
    run_job(args + ["--epochs=1", "--checkpoint_every_steps=2", "--keep_checkpoints=5"])
    # 48 images / batch 8 = 6 steps: mid-epoch at steps 2 and 4, then the epoch's end.
    assert sorted(os.listdir(model_dir / "checkpoints")) == [
        "ckpt-0000-000002", "ckpt-0000-000004", "ckpt-0001-000000"]
