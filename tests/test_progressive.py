"""Progressive resizing (--start_image_size): earlier epochs at one size, the last at another,
one set of weights, under horovodrun with 2 ranks (the optimizer is Horovod's, reused)."""

import json
import shutil
import zipfile

import pytest

from conftest import run_job

# Each test starts real jobs (TensorFlow, launchers): the slow tier (pytest -m 'not slow'
# leaves them out; .ci/run runs them).
pytestmark = pytest.mark.slow


def _resize_height(model_file) -> int:
    with zipfile.ZipFile(model_file) as z:
        config = json.loads(z.read("config.json"))
    layer, = [l for l in config["config"]["layers"] if l["config"]["name"] == "resize"]
    return layer["config"]["height"]


def test_epochs_train_and_evaluate_at_their_own_size(tmp_path, image_tar):
    model_dir = tmp_path / "m"
    common = [f"--data_dir={image_tar}", "--weights=none", "--batch_size=8",
              "--learning_rate=0.001", "--log_every_steps=1"]
    proc = run_job(common + [f"--model_dir={model_dir}", "--epochs=2", "--start_image_size=32",
                             "--image_size=48"], np_ranks=2)
    assert "32px then 48px" in proc.stderr and "epoch 2: image size 48" in proc.stderr
    history = json.loads((model_dir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert _resize_height(model_dir / "model.keras") == 48

    # Each epoch's checkpoint, evaluated on its own, gives back the test loss that epoch logged:
    # only if epoch 1 trained and was scored at 32 px and epoch 2 at 48 px, on the same weights.
    for epoch, size in ((1, 32), (2, 48)):
        one = tmp_path / f"only{epoch}"
        shutil.copytree(model_dir / "checkpoints" / f"ckpt-{epoch:04d}-000000",
                        one / "checkpoints" / f"ckpt-{epoch:04d}-000000")
        run_job(common + [f"--model_dir={one}", "--eval_only"])
        metrics = json.loads((one / "metrics.json").read_text())
        assert metrics["image_size"] == size
        assert abs(metrics["test_loss"] - history[epoch - 1]["test_loss"]) < 1e-5, epoch
    # The two sizes score differently: the comparison above can tell them apart.
    assert abs(history[0]["test_loss"] - history[1]["test_loss"]) > 1e-4
