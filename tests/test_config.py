"""Flags become a Config; nonsense is refused with the flag's name, through the real command."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT, job_env
from resnet.config import Config
from resnet.errors import UsageError


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "--batch_size=0: must be a positive number"),
    (dict(epochs=-1), "--epochs=-1: must not be negative"),
    (dict(epochs=0), "--epochs=0: nothing to train"),
    (dict(precision="fp8"), "--precision=fp8: use one of auto, fp32, bf16"),
    (dict(image_size=16), "--image_size=16: ResNet50 needs at least 32"),
    (dict(image_size=4096), "--image_size=4096: above 512"),
    (dict(freeze_epochs=3, epochs=2), "--freeze_epochs=3 is more than --epochs=2"),
    (dict(weights="/no/such.h5"), "--weights=/no/such.h5: no such file"),
    (dict(learning_rate=-0.1), "--learning_rate=-0.1"),
    (dict(label_smoothing=1.0), "--label_smoothing=1.0: must be below 1"),
    (dict(gradient_compression="bf16"), "--gradient_compression=bf16: use one of none, fp16"),
    (dict(batchnorm="sync"), "--batchnorm=sync: use one of frozen, train"),
    (dict(bn_momentum=1.0), "--bn_momentum=1.0: must be in [0, 1)"),
    (dict(train_from="conv6"), "--train_from=conv6: use one of conv1, conv2, conv3, conv4, conv5"),
    (dict(hang_timeout=-1), "--hang_timeout=-1: must not be negative"),
    (dict(commit_every_steps=0), "--commit_every_steps=0: must be a positive number"),
    (dict(elastic=True, download=True), "--elastic does not combine with --download"),
    (dict(elastic=True, eval_only=True), "--elastic does not combine with --eval_only"),
    (dict(elastic=True, conv_forms="matmul"), "--elastic does not combine with --conv_forms=m"),
    (dict(elastic=True, conv_forms="matmul_dw"),
     "--elastic does not combine with --conv_forms=matmul_dw (elastic trains Keras's"),
    (dict(conv_forms="fast"), "--conv_forms=fast: use one of auto, conv, matmul, matmul_dw"),
    (dict(start_image_size=16), "--start_image_size=16: use 32 to 512"),
    (dict(start_image_size=96, epochs=1), "with --epochs=1 there is no such epoch"),
    (dict(start_image_size=96, elastic=True), "--elastic does not combine with --start_image"),
])
def test_bad_values_refused(kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        Config(**kwargs)


def test_start_image_size_covers_every_epoch_but_the_last():
    c = Config(weights="none", epochs=3, start_image_size=96, image_size=128)
    assert [c.image_size_at(e) for e in range(3)] == [96, 96, 128]
    assert Config(weights="none", epochs=3, image_size=64).image_size_at(0) == 64  # off: --image_size
    # throughout


def test_model_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        Config(model_dir=str(f), weights="none")


def test_debug_shrinks_the_run():
    c = Config(debug=True, weights="none", batch_size=256).effective()
    assert (c.max_train_examples, c.max_test_examples, c.batch_size) == (256, 128, 32)


def test_conv_forms_auto_is_conv_in_an_elastic_run():
    assert Config(weights="none", conv_forms="auto").effective().conv_forms == "auto"
    assert Config(weights="none", conv_forms="auto", elastic=True).effective().conv_forms == "conv"
    assert Config(weights="none", conv_forms="matmul").effective().conv_forms == "matmul"


@pytest.mark.parametrize("args, message", [
    (["--batch_size=0"], "--batch_size=0: must be a positive number"),
    (["--precision=fp16"], "precision"),
    (["--train_from=conv6"],
     "--train_from=conv6: value should be one of <conv1|conv2|conv3|conv4|conv5>"),
    (["--epochs=-2"], "--epochs=-2: must not be negative"),
    (["stray"], "unexpected arguments: stray"),
])
def test_command_line_refusals_exit_nonzero(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "train_dist.py", "--weights=none",
                           f"--model_dir={tmp_path}/m"] + args, cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "m").exists()  # refused before anything was written


@pytest.mark.slow  # a real job
def test_unwritable_model_dir(tmp_path, image_tar):
    # CI runs as root, which ignores permission bits: make the model_dir's parent a file.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = str(blocker / "model")
    proc = subprocess.run([sys.executable, "train_dist.py", "--weights=none",
                           f"--data_dir={image_tar}", f"--model_dir={target}"], cwd=ROOT,
                          env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"--model_dir={target}: not writable" in proc.stderr


@pytest.mark.slow  # a real job (TensorFlow, Horovod)
def test_gloo_operations_without_horovodrun_gloo_exit_2_instead_of_crashing(tmp_path, image_tar):
    # Without the check, this process dies with SIGSEGV (-11) at Horovod's first allreduce.
    proc = subprocess.run([sys.executable, "train_dist.py", "--weights=none", "--epochs=1",
                           f"--data_dir={image_tar}", f"--model_dir={tmp_path / 'm'}"], cwd=ROOT,
                          env=job_env(HOROVOD_CPU_OPERATIONS="gloo"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "HOROVOD_CPU_OPERATIONS=gloo needs Horovod's Gloo controller" in proc.stderr
    assert "horovodrun --gloo" in proc.stderr
    assert not (tmp_path / "m").exists()
