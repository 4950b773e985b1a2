"""The whole job in-process, once: job.run for one tiny epoch on synthetic data (a world of one),
then --eval_only of its checkpoint. Seconds, where every other end-to-end check is a process."""

import json
import os

import numpy as np

from resnet.config import Config, resolve_precision
from resnet.training import job


def test_one_tiny_epoch_then_eval_only(tmp_path, restored_process_state):
    # Trained at the precision this CPU would not choose: --eval_only's auto must take the
    # checkpoint's, not the CPU's (an fp32 checkpoint scored differently in bf16).
    other = {"bf16": "fp32", "fp32": "bf16"}[resolve_precision("auto")]
    config = Config(dataset="synthetic", max_train_examples=48, max_test_examples=20,
                    weights="none", image_size=32, batch_size=8, epochs=1, warmup_epochs=0,
                    model_dir=str(tmp_path), hang_timeout=0, precision=other)
    metrics = job.run(config)
    assert metrics["mode"] == "train" and metrics["world_size"] == 1
    assert metrics["steps_per_epoch"] == 6 and metrics["test_examples"] == 20
    assert [r["epoch"] for r in metrics["history"]] == [1]
    assert metrics["flags"]["precision"] == other
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"]
    for name in ("model.keras", "class_names.json", "confusion_matrix.png",
                 "training_curves.png"):
        assert os.path.exists(tmp_path / name), name
    assert os.listdir(tmp_path / "checkpoints") == ["ckpt-0001-000000"]

    again = job.run(Config(**{**config.to_dict(), "eval_only": True, "precision": "auto"}))
    assert again["mode"] == "eval_only" and again["checkpoint"].endswith("ckpt-0001-000000")
    assert again["precision"] == other
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert again["test_loss"] == metrics["test_loss"]
    # The same training command again, on a model_dir trained to --epochs: nothing to train,
    # and what it scores and saves is the checkpoint's model, not the one it built (a repeated
    # command or a requeue after the end must not overwrite model.keras with an untrained one).
    trained = _weights(tmp_path / "model.keras")
    rerun = job.run(config)
    assert rerun["mode"] == "train" and rerun["history"] == metrics["history"]
    assert rerun["confusion_matrix"] == metrics["confusion_matrix"]
    assert rerun["test_loss"] == metrics["test_loss"]
    assert all(np.array_equal(a, b) for a, b in zip(_weights(tmp_path / "model.keras"), trained))
    # Asked for by name, the other precision is used: the model it built computes in it.
    named = job.run(Config(**{**config.to_dict(), "eval_only": True,
                              "precision": resolve_precision("auto")}))
    assert named["precision"] == resolve_precision("auto")
    import tensorflow as tf
    assert tf.keras.mixed_precision.global_policy().name == (
        "mixed_bfloat16" if named["precision"] == "bf16" else "float32")


def _weights(path):
    """Every array in a .keras file (a zip holding model.weights.h5), in the file's order."""
    import io
    import zipfile

    import h5py
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        out = []
        f.visititems(lambda name, d: out.append(d[()]) if isinstance(d, h5py.Dataset) else None)
    assert out, path
    return out
