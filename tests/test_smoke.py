"""The whole job in-process, once: job.run for one tiny epoch on synthetic data (a world of one),
then --eval_only of its checkpoint. Seconds, where every other end-to-end check is a process."""

import json
import os


from resnet.config import Config
from resnet.training import job


def test_one_tiny_epoch_then_eval_only(tmp_path, restored_process_state):
    config = Config(dataset="synthetic", max_train_examples=48, max_test_examples=20,
                    weights="none", image_size=32, batch_size=8, epochs=1, warmup_epochs=0,
                    model_dir=str(tmp_path), hang_timeout=0)
    metrics = job.run(config)
    assert metrics["mode"] == "train" and metrics["world_size"] == 1
    assert metrics["steps_per_epoch"] == 6 and metrics["test_examples"] == 20
    assert [r["epoch"] for r in metrics["history"]] == [1]
    assert metrics["flags"]["precision"] in ("fp32", "bf16")  # auto, resolved for this CPU
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"]
    for name in ("model.keras", "class_names.json", "confusion_matrix.png",
                 "training_curves.png"):
        assert os.path.exists(tmp_path / name), name
    assert os.listdir(tmp_path / "checkpoints") == ["ckpt-0001-000000"]

    again = job.run(Config(**{**config.to_dict(), "eval_only": True, "precision": "auto"}))
    assert again["mode"] == "eval_only" and again["checkpoint"].endswith("ckpt-0001-000000")
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
