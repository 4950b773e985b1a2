"""The harness's arithmetic and report, on figures made up here (the runs themselves are the
harness's job: python -m benchmarks.harness), and the --train_from benchmark run small."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, job_env
from benchmarks import harness as bench


def test_windows_skip_the_warm_up_and_leave_no_partial_window():
    # 3 warm-up steps, then 7 steps of 0.5 s at 64 images: two full windows of 3, one step over.
    rates = bench.windows([9.0, 5.0, 2.0] + [0.5] * 7, 64)
    assert rates == [pytest.approx(128.0)] * 2


def test_pool_takes_both_runs_windows_and_keeps_a_timeout_visible():
    a = {"command": "x", **bench.summary([100.0, 110.0, 90.0])}
    b = {"command": "x", **bench.summary([60.0, 70.0, 80.0])}
    both = bench.pool(a, b)
    assert sorted(both["windows"]) == [60.0, 70.0, 80.0, 90.0, 100.0, 110.0]
    assert both["median"] == 85.0 and both["min"] == 60.0 and both["max"] == 110.0
    timed_out = {"command": "x", "timeout": 300}
    assert bench.pool(a, timed_out) is timed_out and bench.pool(timed_out, a) is timed_out


def _figure(median):
    return {"command": f"cmd {median}", **bench.summary([median * 0.9, median, median * 1.1])}


def test_markdown_shows_the_ratios_the_targets_are_judged_by():
    r = {"machine": {"cpu": "Test CPU", "logical_cpus": 2, "flags": ["avx2"], "python": "3.11",
                     "tensorflow": "2.15.1", "horovod": "0.28.1", "date": "today"},
         "steps": 12, "rounds_32px_fp32": 2,
         "baseline": {"32px_fp32": _figure(20.0), "32px_bf16": _figure(10.0)},
         "baseline_onednn": {"32px_fp32": _figure(100.0), "32px_bf16": _figure(10.0)},
         "train": {"32px_fp32": _figure(97.0), "32px_bf16": _figure(9.0)},
         "scaling": {"1x2": _figure(97.0), "2x1": _figure(87.3)},
         "pipeline": {"decode": 1500.0, "augment": 8730.0}}
    text = bench.markdown(r)
    assert text.startswith(bench.START) and text.endswith(bench.END)
    assert "| 32px fp32, batch 64 | 20.0 (18.0-22.0) | 100.0 (90.0-110.0) | " \
           "97.0 (87.3-106.7) | 4.85 | 0.97 |" in text
    assert "2 ranks x 1 core / 1 rank x 2 cores: 0.90" in text
    assert "pool the windows of two rounds" in text
    assert "200x what a rank of the 2 x 1 layout trains (43.6 images/s)" in text
    assert "oneDNN's kernels are off" in text  # an AVX2 CPU: plain Keras runs without oneDNN
    assert "| 32 | 64 | 97.0 (87.3-106.7) | 9.0 (8.1-9.9) | 0.09 | - / - |" in text  # no ceiling
    r["machine"]["flags"] = ["avx2", "avx512_bf16", "avx512f"]
    assert "TensorFlow then turns oneDNN on by itself" in bench.markdown(r)
    # With the ceiling: 97 images/s x 0.3 GFLOP a step = 29.1 GFLOP/s of a 58.2 conv ceiling.
    r["ceiling"] = {"ceiling": {"fp32": {"matmul_gflops": 50.0, "conv_gflops": 58.2},
                                "bf16": {"matmul_gflops": 5.0, "conv_gflops": 2.7}},
                    "forward_flops": {"32": 1e8}, "train_flops": {"conv1": {"32": 3e8}}}
    text = bench.markdown(r)
    assert "| 0.09 | 50% / 100% |" in text
    assert "fp32: matmul 2048^2 50, 3x3 conv 58" in text


def _freeze_bench(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.freeze", *args], cwd=ROOT,
                          env=job_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # runs the benchmark
def test_freeze_benchmark_times_every_stage_with_fewer_variables_each(tmp_path):
    out = tmp_path / "freeze.json"
    proc = _freeze_bench("--image_size=32", "--batch_size=4", "--steps=1", "--rounds=1",
                         f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| 32 |")]
    assert [r[2] for r in rows] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert {r[3] for r in rows} == {"fp32"}  # the default precision
    variables = [int(r[4]) for r in rows]
    assert variables == sorted(variables, reverse=True) and len(set(variables)) == 5
    assert rows[0][6] == "1.00"  # the first row is the reference
    figures = json.loads(out.read_text())["images_per_second"]
    assert sorted(figures) == sorted(f"32/{r[2]}/fp32" for r in rows)
    assert all(len(v) == 1 and v[0] > 0 for v in figures.values())


@pytest.mark.slow  # runs the benchmark
def test_freeze_benchmark_compares_image_sizes(tmp_path):
    out = tmp_path / "freeze.json"
    proc = _freeze_bench("--image_size=32,48", "--stages=conv5", "--batch_size=4", "--steps=2",
                         "--rounds=1", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")] for line in proc.stdout.splitlines()
            if "| conv5 |" in line]
    assert [(r[1], r[2]) for r in rows] == [("32", "conv5"), ("48", "conv5")]
    assert rows[0][4] == rows[1][4]  # the same variables train at either size
    figures = json.loads(out.read_text())["images_per_second"]
    assert sorted(figures) == ["32/conv5/fp32", "48/conv5/fp32"]
    assert all(len(v) == 2 and min(v) > 0 for v in figures.values())


@pytest.mark.slow  # runs the benchmark
def test_freeze_benchmark_compares_precisions_with_the_same_variables(tmp_path):
    out = tmp_path / "freeze.json"
    proc = _freeze_bench("--image_size=32", "--stages=conv5", "--precision=fp32,bf16",
                         "--batch_size=4", "--steps=1", "--rounds=1", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")] for line in proc.stdout.splitlines()
            if "| conv5 |" in line]
    assert [r[3] for r in rows] == ["fp32", "bf16"]
    assert rows[0][4] == rows[1][4]  # mixed_bfloat16 keeps the variables (float32 ones)
    assert sorted(json.loads(out.read_text())["images_per_second"]) == [
        "32/conv5/bf16", "32/conv5/fp32"]


@pytest.mark.slow  # starts the benchmark (TensorFlow) to see it refuse
def test_freeze_benchmark_refuses_unknown_stages_and_sizes(tmp_path):
    proc = _freeze_bench("--stages=conv4,conv9", f"--out={tmp_path / 'f.json'}")
    assert proc.returncode == 2 and "conv9: not a stage" in proc.stderr
    proc = _freeze_bench("--image_size=96,16", f"--out={tmp_path / 'f.json'}")
    assert proc.returncode == 2 and "at least 32 pixels" in proc.stderr
    proc = _freeze_bench("--precision=bf16,fp8", f"--out={tmp_path / 'f.json'}")
    assert proc.returncode == 2 and "fp8: not a precision" in proc.stderr
    assert not (tmp_path / "f.json").exists()


def test_precisions_table_gives_each_mode_against_fp32_and_the_ceiling():
    from benchmarks import precisions
    r = {"machine": {"cpu": "Test CPU", "logical_cpus": 2, "flags": ["amx_bf16"],
                     "tensorflow": "2.21.0", "date": "today"},
         "steps": 12, "rounds": 2, "window_steps": 3,
         "figures": {"recipe96 fp32": _figure(40.0), "recipe96 bf16_amp": _figure(120.0),
                     "all224 fp32": _figure(5.0), "all224 bf16": _figure(20.0)},
         # 20 images/s x 24 GFLOP = 480 GFLOP/s of a 2400 bf16 conv rate: 20%; 120 x 3 GFLOP
         # = 360 of 2400: 15% (a step with conv1-conv3 frozen, as benchmarks.ceiling counts it).
         "ceiling": {"ceiling": {"fp32": {"conv_gflops": 300.0}, "bf16": {"conv_gflops": 2400.0}},
                     "forward_flops": {"224": 8e9, "96": 1.4e9},
                     "train_flops": {"conv1": {"224": 24e9}, "conv4": {"96": 3e9}}}}
    text = precisions.markdown(r)
    assert "| recipe96: 96 px, batch 64, --train_from=conv4 | bf16_amp | 120.0 (108.0-132.0) " \
           "| 3.00 | 15% |" in text
    assert "| all224: 224 px, batch 16 | bf16 | 20.0 (18.0-22.0) | 4.00 | 20% |" in text
    assert "| all224: 224 px, batch 16 | fp32 | 5.0 (4.5-5.5) | 1.00 | 40% |" in text


def test_precisions_refuses_what_it_cannot_measure():
    from benchmarks import precisions
    from resnet.config import PRECISIONS
    with pytest.raises(SystemExit, match="--settings=recipe69: use some of recipe96, layers128"):
        precisions._parse("recipe69", precisions.SETTINGS, "settings")
    with pytest.raises(SystemExit, match="--precisions=fp16: use some of auto, fp32, bf16, "):
        precisions._parse("fp16", PRECISIONS, "precisions")
    with pytest.raises(SystemExit, match="--settings=: use some of"):
        precisions._parse("", precisions.SETTINGS, "settings")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.precisions", "--steps=2"], cwd=ROOT,
                          env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "at least 1 round of 3 steps" in proc.stderr, proc.stderr


def test_inference_interleaves_the_precisions_and_reports_each_rounds_ratio():
    import tensorflow as tf
    from benchmarks import inference

    calls = []

    def serve(name):
        def call(images):
            calls.append(name)
            return tf.reduce_sum(tf.cast(images, tf.float32))
        return call
    got = inference.interleaved({"fp32": serve("fp32"), "bf16": serve("bf16")}, 8, 2, 4)
    # A warm-up call each, then the order alternating round by round.
    assert calls == ["fp32", "bf16"] + ["fp32", "bf16", "bf16", "fp32"] * 2
    fp32, bf16 = got["per_call"]["fp32"], got["per_call"]["bf16"]
    assert len(fp32) == len(bf16) == 4 and min(fp32 + bf16) > 0
    ratios = sorted(b / f for b, f in zip(bf16, fp32))
    assert got["bf16_over_fp32"] == {"median": (ratios[1] + ratios[2]) / 2, "min": ratios[0],
                                     "max": ratios[-1]}


def test_a_steps_flops_count_the_trained_layers_gradients_and_not_the_frozen_ones():
    from benchmarks import ceiling
    # At 32 px conv5 sees 1x1 pixels. Multiply-adds per image: block 1 (1x1 1024->512, 3x3
    # 512->512, 1x1 512->2048, shortcut 1024->2048), blocks 2 and 3 (1x1 2048->512, 3x3, 1x1),
    # and the head (2048->10); 2 FLOPs each.
    block1 = 1024 * 512 + 9 * 512 * 512 + 512 * 2048 + 1024 * 2048
    block = 2048 * 512 + 9 * 512 * 512 + 512 * 2048
    model = ceiling.model_at(32)
    assert ceiling.trained_forward_flops(model, "conv5") == \
        2 * (block1 + 2 * block + 2048 * 10)
    # Every stage training: the trained convolutions are (nearly) the whole forward pass.
    forward = ceiling.resnet_forward_flops(32, model)
    every = ceiling.trained_forward_flops(model, "conv1")
    assert 0.95 < every / forward < 1.0
    assert ceiling.train_flops(forward, model, "conv1") == forward + 2 * every


def test_ceiling_refuses_a_stage_it_does_not_know():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ceiling", "--sizes=32",
                           "--train_from=conv4,conv9"], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--train_from=conv4,conv9: use some of conv1, conv2, conv3, conv4, conv5" in proc.stderr
