"""--precision's two other bf16 modes in the real job (resnet/model.py, BF16_MODES): each shown to
act by what TensorFlow and oneDNN themselves log, each leaving a float32 model plain Keras opens,
and 1 and 2 ranks' evaluation identical; and bf16 itself with the job's own kernels. Their speed and accuracy against Keras's bf16 need bf16
arithmetic: benchmarks.precisions and BENCHMARKS.md, "Which bf16"."""

import json
import re

import pytest

from conftest import job_env, plain_keras, run_job

pytestmark = pytest.mark.slow

# conv5 alone trains at 32 px: seconds per step even where bf16 is emulated.
SMALL = ["--dataset=synthetic", "--max_train_examples=32", "--max_test_examples=32",
         "--epochs=1", "--weights=none", "--image_size=32", "--train_from=conv5",
         "--batch_size=8", "--log_every_steps=1", "--warmup_epochs=0", "--conv_forms=conv"]


def _metrics(model_dir):
    return json.loads((model_dir / "metrics.json").read_text())


def test_bf16_amp_rewrites_the_traced_graph_and_two_ranks_evaluate_as_one(tmp_path):
    model_dir = tmp_path / "m"
    # TensorFlow's own INFO line from the pass, on every graph it rewrote.
    env = job_env(TF_CPP_MIN_LOG_LEVEL="0")
    proc = run_job(SMALL + [f"--model_dir={model_dir}", "--precision=bf16_amp"], np_ranks=2,
                   env=env)
    converted = [int(n) for n in re.findall(r"Converted (\d+)/\d+ nodes to bfloat16",
                                            proc.stderr)]
    assert converted and max(converted) > 50, proc.stderr[-4000:]  # the step's convolutions
    trained = _metrics(model_dir)  # scored by the 2 ranks that trained it
    assert trained["flags"]["precision"] == "bf16_amp" and trained["world_size"] == 2
    # auto: the checkpoint's precision, the pass on again, in one process.
    proc = run_job(SMALL + [f"--model_dir={model_dir}", "--eval_only"], env=env)
    assert re.search(r"Converted \d+/\d+ nodes to bfloat16", proc.stderr), proc.stderr[-3000:]
    one = _metrics(model_dir)
    assert one["world_size"] == 1
    assert one["confusion_matrix"] == trained["confusion_matrix"]
    assert one["test_accuracy"] == trained["test_accuracy"]
    assert one["test_loss"] == pytest.approx(trained["test_loss"], rel=1e-5)
    _plain_keras_float32(model_dir)


def test_bf16_fpmath_reaches_every_onednn_convolution_and_matmul(tmp_path):
    model_dir = tmp_path / "m"
    proc = run_job(SMALL + [f"--model_dir={model_dir}", "--precision=bf16_fpmath"],
                   env=job_env(ONEDNN_VERBOSE="1"))
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith("onednn_verbose") and ",exec," in line and
             (",convolution," in line or ",matmul," in line or ",inner_product," in line)]
    assert len(lines) > 50, proc.stdout[-3000:]
    # Set before oneDNN's first primitive of the process, or it would be ignored for all.
    assert all("attr-fpmath:bf16" in line for line in lines), \
        [line for line in lines if "attr-fpmath:bf16" not in line][:3]
    assert _metrics(model_dir)["flags"]["precision"] == "bf16_fpmath"
    _plain_keras_float32(model_dir)


def test_bf16_trains_with_the_jobs_own_kernels_and_two_ranks_evaluate_as_one(tmp_path):
    """A training run (2 ranks) loads resnet/kernels; --noown_kernels does not, and its 1 rank
    scores the same checkpoint as the 2 ranks did (a run of a finished model_dir evaluates).
    conv4 at 96 px, batch 8: its 1x1 256->1024 pairs fold in the step (kernels.scale_to's op),
    and every bfloat16 ReluGrad, BiasAddGrad and AddN of the backward runs ours."""
    small = [f for f in SMALL if not f.startswith(("--image_size", "--train_from"))]
    small += ["--image_size=96", "--train_from=conv4", f"--model_dir={tmp_path / 'm'}",
              "--precision=bf16"]
    loaded = "resnet.kernels: the 3x3 matmul form's columns, and in bfloat16 ReluGrad"
    proc = run_job(small, np_ranks=2)
    assert loaded in proc.stderr, proc.stderr[-3000:]
    assert "trained ones fold theirs in each step" in proc.stderr
    trained = _metrics(tmp_path / "m")
    assert trained["world_size"] == 2
    proc = run_job(small + ["--noown_kernels"])
    assert loaded not in proc.stderr and "resnet.kernels" not in proc.stderr
    again = _metrics(tmp_path / "m")
    assert again["world_size"] == 1
    assert again["confusion_matrix"] == trained["confusion_matrix"]
    assert again["test_accuracy"] == trained["test_accuracy"]
    _plain_keras_float32(tmp_path / "m")


def _plain_keras_float32(model_dir):
    dtypes = plain_keras(model_dir / "model.keras", "sorted({v.dtype.name for v in m.weights})")
    assert dtypes == "['float32']", dtypes
