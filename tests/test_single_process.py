"""No launcher: `python train_dist.py` trains as one rank; --debug; resume; predict; load_model."""

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from conftest import ROOT, job_env, run_job

# Each test starts real jobs (TensorFlow, launchers): the slow tier (pytest -m 'not slow'
# leaves them out; .ci/run runs them).
pytestmark = pytest.mark.slow


def test_debug_mode_end_to_end_then_predict(tmp_path, image_tar, splits):
    model_dir = tmp_path / "m"
    proc = run_job(["--debug", f"--data_dir={image_tar}", f"--model_dir={model_dir}",
                    "--weights=none", "--epochs=1", "--image_size=40"],
                   env={k: v for k, v in job_env(TF_CPP_MIN_LOG_LEVEL="0").items()
                        if k != "TF_ENABLE_ONEDNN_OPTS"})
    assert "Executing op" in proc.stderr or "device:CPU" in proc.stderr  # op placement shown
    # train_dist.py turns oneDNN on where TensorFlow would not (AVX2-only CPUs): 5.7x here.
    assert "oneDNN custom operations are on" in proc.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "per_class_accuracy", "confusion_matrix", "history",
                "images_per_second", "world_size", "global_batch_size", "flags", "versions"):
        assert key in metrics, key
    assert metrics["world_size"] == 1 and metrics["global_batch_size"] == 32
    assert metrics["flags"]["debug"] is True and metrics["flags"]["image_size"] == 40
    assert metrics["versions"]["tensorflow"] == metadata.version("tensorflow-cpu")
    assert metrics["versions"]["keras"] == metadata.version("tf-keras")  # Keras 2, not Keras 3
    assert metrics["versions"]["horovod"] == "0.28.1"
    assert set(metrics["per_class_accuracy"]) == {"airplane", "automobile", "bird", "cat", "deer",
                                                 "dog", "frog", "horse", "ship", "truck"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 40
    assert len(metrics["history"]) == 1 and metrics["images_per_second"] > 0
    assert (model_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (model_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    # Plain Keras opens the saved model without this package on the path.
    code = ("import tensorflow as tf, numpy as np; m = tf.keras.models.load_model(%r); "
            "print(m.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape)"
            % str(model_dir / "model.keras"))
    env = job_env()
    env.pop("PYTHONPATH")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    assert "(2, 10)" in out.stdout

    # The predict command on real image files (one not 32x32).
    from PIL import Image
    (test_x, _), _ = splits
    Image.fromarray(test_x[0]).save(tmp_path / "a.png")
    Image.fromarray(test_x[1]).resize((100, 80)).save(tmp_path / "b.jpg")
    out = subprocess.run([sys.executable, "predict.py", f"--model_dir={model_dir}",
                          "--top=2", str(tmp_path / "a.png"), str(tmp_path / "b.jpg")], cwd=ROOT,
                         env=job_env(), capture_output=True, text=True, timeout=300, check=True)
    rows = [line.split(",") for line in out.stdout.strip().splitlines()]  # CSV on stdout
    assert rows[0] == ["path", "class_1", "probability_1", "class_2", "probability_2"]
    assert [r[0] for r in rows[1:]] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert all(len(r) == 5 and float(r[2]) >= float(r[4]) for r in rows[1:])


def test_predict_refusals(tmp_path):
    out = subprocess.run([sys.executable, "predict.py", f"--model_dir={tmp_path}",
                          "x.png"], cwd=ROOT, env=job_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "no model.keras; train first" in out.stderr


def test_resume_continues_at_the_next_epoch(tmp_path, image_tar):
    common = [f"--data_dir={image_tar}", f"--model_dir={tmp_path}/m", "--weights=none",
              "--image_size=32", "--batch_size=16", "--learning_rate=0.001"]
    run_job(common + ["--epochs=1"])
    first = json.loads((tmp_path / "m" / "metrics.json").read_text())
    proc = run_job(common + ["--epochs=2"])
    assert "resuming from" in proc.stderr and "epoch 2, step 0" in proc.stderr
    assert "epoch 1/2 step" not in proc.stderr  # epoch 1 was not trained again
    second = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]
    names = sorted(os.listdir(tmp_path / "m" / "checkpoints"))
    assert names == ["ckpt-0001-000000", "ckpt-0002-000000"]
    # Already done: the same command again trains nothing and re-reports.
    proc = run_job(common + ["--epochs=2"])
    assert "epoch 2/2 step" not in proc.stderr
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["history"] == \
        second["history"]
