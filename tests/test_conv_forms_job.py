"""--conv_forms in the real job and the step profile: train_dist.py under horovodrun with the forms
chosen by timing, the same training as with convolutions, a model plain Keras opens, and
benchmarks.profile showing the matmuls where the convolutions' weight gradients were."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, horovodrun, job_env, plain_keras, run_job

pytestmark = pytest.mark.slow

# conv5 alone trains: 10 eligible convolutions at 1x1 pixels (32 px input), seconds per step.
# float32 on every CPU: auto would be bf16 where the CPU has it, and bf16's rounding is not the
# float32 round-off the comparisons below allow.
SMALL = ["--dataset=synthetic", "--max_train_examples=64", "--max_test_examples=32",
         "--epochs=1", "--weights=none", "--image_size=32", "--train_from=conv5",
         "--batch_size=8", "--log_every_steps=1", "--warmup_epochs=0", "--precision=fp32"]


def _metrics(model_dir):
    return json.loads((model_dir / "metrics.json").read_text())


def test_matmul_forms_and_folded_batchnorm_train_as_the_convolutions_do(tmp_path):
    losses = {}
    for name, flags in (("conv", ["--conv_forms=conv", "--nofold_batchnorm"]),
                        ("matmul", ["--conv_forms=matmul", "--nofold_batchnorm"]),
                        ("matmul_dw", ["--conv_forms=matmul_dw", "--nofold_batchnorm"]),
                        ("fold", ["--conv_forms=conv", "--fold_batchnorm"])):
        proc = run_job(SMALL + [f"--model_dir={tmp_path / name}"] + flags)
        # conv5 trains: conv1-conv4's 1 + 10 + 13 + 19 convolutions are frozen.
        assert ("--fold_batchnorm: 43 frozen convolutions" in proc.stderr) == (name == "fold")
        losses[name] = [(e["train_loss"], e["test_loss"]) for e in
                        _metrics(tmp_path / name)["history"]]
    # The same maths in another order of additions: float32 round-off, not another model.
    (conv,), (matmul,), (fold,) = losses["conv"], losses["matmul"], losses["fold"]
    assert matmul == pytest.approx(conv, rel=1e-3) and conv[0] > 0
    assert losses["matmul_dw"][0] == pytest.approx(conv, rel=1e-3)
    assert fold == pytest.approx(conv, rel=1e-3)


def test_auto_forms_on_two_ranks_rank0_times_once_and_models_stay_plain_keras(tmp_path):
    """tests/test_distributed.py trains with auto and fold on 2 ranks too, and holds 1 and 2
    ranks' evaluation of that model identical."""
    model_dir = tmp_path / "run"
    env = job_env(XDG_CACHE_HOME=str(tmp_path / "cache"))  # nothing timed yet: rank 0 times
    proc = run_job(SMALL + [f"--model_dir={model_dir}", "--conv_forms=auto", "--fold_batchnorm"],
                   np_ranks=2, env=env)
    log = proc.stdout + proc.stderr
    assert log.count("--conv_forms=auto:") == 1, log[-3000:]  # rank 0 decided, once
    assert "--fold_batchnorm: 43 frozen convolutions" in log, log[-3000:]
    cache = json.loads((tmp_path / "cache" / "resnet-horovod" / "conv_forms.json").read_text())
    (timings,) = cache.values()
    assert timings and all({"conv", "matmul", "matmul_dw"} <= set(t) for t in timings.values())
    assert _metrics(model_dir)["test_accuracy"] >= 0

    layers = plain_keras(model_dir / "model.keras", "[type(l).__name__ for l in m.layers]")
    assert "Functional" in layers or "Model" in layers, layers


def test_a_resume_trains_with_the_forms_its_checkpoint_recorded_whatever_the_timings_say(
        tmp_path):
    """A requeued job can land on another CPU, whose timings choose other forms: the resumed
    steps would then round differently from the run they continue."""
    model_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = SMALL + ["--epochs=2", f"--model_dir={model_dir}", "--conv_forms=auto",
                    "--keep_checkpoints=2"]
    run_job(args, env=job_env(XDG_CACHE_HOME=str(cache)))
    first, last = sorted((model_dir / "checkpoints").iterdir())
    assert (first.name, last.name) == ("ckpt-0001-000000", "ckpt-0002-000000")
    recorded = json.loads((first / "state.json").read_text())["conv_forms"]
    assert list(recorded) == ["full@32"] and len(recorded["full@32"]) <= 10, recorded

    # The machine's timings now choose otherwise (every layer a matmul, or none if that was the
    # choice), and epoch 2's checkpoint is gone: the same command resumes after epoch 1.
    every = len(recorded["full@32"]) == 10
    path = cache / "resnet-horovod" / "conv_forms.json"
    timings = json.loads(path.read_text())
    for by_shape in timings.values():
        for t in by_shape.values():
            t.update(matmul=t["conv"] * (10 if every else 0.1), matmul_dw=t["conv"] * 10)
    path.write_text(json.dumps(timings))
    shutil.rmtree(last)
    proc = run_job(args, env=job_env(XDG_CACHE_HOME=str(cache)))
    log = proc.stdout + proc.stderr
    assert "epoch 2, step 0" in log, log[-3000:]
    assert "as the checkpoint resumed recorded them" in log, log[-3000:]
    assert "timed on this machine" not in log, log[-3000:]
    assert json.loads((last / "state.json").read_text())["conv_forms"] == recorded

    # A new run on the flipped timings chooses the other forms: the record is what held them.
    fresh = run_job(SMALL + [f"--model_dir={tmp_path / 'fresh'}", "--conv_forms=auto"],
                    env=job_env(XDG_CACHE_HOME=str(cache)))
    assert "timed on this machine" in fresh.stdout + fresh.stderr
    (state,) = (tmp_path / "fresh" / "checkpoints").glob("*/state.json")
    assert len(json.loads(state.read_text())["conv_forms"]["full@32"]) == (0 if every else 10)


def _profile(tmp_path, forms, ranks=1, ceiling=True):
    out = tmp_path / forms
    cmd = [sys.executable, "-m", "benchmarks.profile", "--image_size=32", "--batch_size=8",
           "--train_from=conv5", "--warmup_steps=1", "--profile_steps=2",
           f"--conv_forms={forms}", f"--out={out}", f"--{'' if ceiling else 'no'}ceiling"]
    if ranks > 1:
        cmd = horovodrun(ranks) + cmd
    proc = subprocess.run(cmd, cwd=ROOT, env=job_env(OMP_NUM_THREADS=str(2 // ranks)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, json.loads((out / "profile.json").read_text())


def test_profile_shows_where_the_step_goes_and_what_the_forms_change(tmp_path):
    kinds, reports = {}, {}
    for forms, ranks in (("conv", 2), ("matmul", 1)):
        # The ceiling once (a process of its own, a model built twice): on 2 ranks it is left
        # out, and so is its sentence.
        reports[forms], result = _profile(tmp_path, forms, ranks, ceiling=ranks == 1)
        assert result["step_ms"] > 0 and "One step:" in reports[forms]
        assert result["ranks"] == ranks
        assert "onednn_verbose" not in reports[forms]  # oneDNN's lines went to the file
        kinds[forms] = {(kind, prop) for kind, prop, *_ in result["onednn"]}
        assert any(t.startswith("_Mkl") for t in result["tf_ops"]), result["tf_ops"]
        if ranks > 1:
            assert result["ceiling"] is None and "convolution rate" not in reports[forms]
            continue
        # The step against this machine's ceiling: conv5 trains, so a step is more than the
        # forward pass and less than 3x it.
        c = result["ceiling"]
        assert c["precision"] in ("fp32", "bf16") and c["conv_gflops"] > 0
        assert c["forward_flops"] < c["train_flops"] < 3 * c["forward_flops"]
        assert "of this machine's" in reports[forms] and "3x3 convolution rate" in reports[forms]
    # On 2 ranks the gradients' allreduce has a row of its own, from its start to its done.
    # (horovodrun puts "[1,0]<stdout>:" before each line of rank 0's.)
    assert re.search(r"\| allreduce \| [\d.]+ \|", reports["conv"]), reports["conv"]
    assert "| allreduce |" not in reports["matmul"]  # 1 rank: nothing to average
    # Convolutions trained conv5's weights; as matmuls, no weight gradient is a convolution.
    assert ("convolution", "backward_weights") in kinds["conv"]
    assert ("convolution", "backward_weights") not in kinds["matmul"]
    # The matmul form's oneDNN primitive: gemm_api in the fp32 runs on AVX2, matmul in the
    # bf16 runs (auto's precision) on AVX512-BF16; either is a matmul, not a convolution.
    assert kinds["matmul"] & {("gemm_api", "undef"), ("matmul", "undef")}, kinds["matmul"]
    assert ("convolution", "forward_training") in kinds["matmul"]  # the frozen stages' remain
