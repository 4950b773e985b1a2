"""The benchmark harness: every speed figure in BENCHMARKS.md comes from one run of this.

  .venv/bin/python -m benchmarks.harness            # 4.6 minutes on 2 Zen 4 cores (13 on AVX2)
  .venv/bin/python -m benchmarks.harness --quick    # fewer steps and sizes, for a smoke run

In ONE run, on the same machine and synthetic data (so the disk is out of the picture):
  1. train_dist.py with 1 rank against plain single-process Keras model.fit (benchmarks.baseline),
     same model, batch and precision;
  2. float32 against bf16 (Keras mixed_bfloat16) at 32, 64 and 128 pixels;
  3. 1 rank x all cores against all ranks x 1 core each (through the launch plan);
  4. the input pipeline alone, per rank: real JPEGs decoded from disk, then tf.data augmentation;
  5. this machine's ceiling (benchmarks.ceiling: TensorFlow's best matmul and 3x3 convolution
     rates per precision), against which each fp32/bf16 figure shows its `% of ceiling`.
Each training figure is the median (with min and max) of windows of WINDOW steps after WARMUP
steps. Every measurement runs in its own process, one after another, never two at once. Raw
figures go to bench_out/bench.json, and the section between the markers in BENCHMARKS.md is
rewritten from them.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, shown, train_dist_args
from resnet.runtime import topology
from resnet.runtime.env import onednn_by_default

WARMUP = 3
WINDOW = 3
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
# (image size, batch per rank): big enough to keep the cores busy, small enough to finish here.
SIZES = {32: 64, 64: 32, 128: 16}


TIMEOUT_S = 300  # per measurement: a setting slower than this is reported as such, not waited for


def _env(threads=None, onednn=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # TensorFlow's own default unless asked
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd, env):
    """stdout of cmd, or None when it took longer than TIMEOUT_S."""
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True,
                              timeout=TIMEOUT_S).stdout
    except subprocess.TimeoutExpired:
        return None


def windows(step_seconds, images_per_step, skip=WARMUP):
    """Images/s of each window of WINDOW steps after the first `skip` steps."""
    steps = step_seconds[skip:]
    return [WINDOW * images_per_step / sum(steps[i:i + WINDOW])
            for i in range(0, len(steps) - WINDOW + 1, WINDOW)]


def summary(rates):
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "windows": rates}


def pool(first: dict, second: dict) -> dict:
    """One figure from two runs of the same setting: their windows together. A round that timed
    out is what gets reported: a median of the other round alone would hide it."""
    if "timeout" in first or "timeout" in second:
        return first if "timeout" in first else second
    return {"command": first["command"], **summary(first["windows"] + second["windows"])}


def plain_keras(image_size, precision, batch, steps, onednn=None):
    """A user's model.fit; onednn=None leaves TF_ENABLE_ONEDNN_OPTS as TensorFlow defaults it."""
    cmd = [sys.executable, "-m", "benchmarks.baseline", f"--image_size={image_size}",
           f"--precision={precision}", f"--batch_size={batch}", f"--steps={steps}"]
    shown = ("TF_ENABLE_ONEDNN_OPTS=1 " if onednn else "") + "python " + " ".join(cmd[1:])
    out = _run(cmd, _env(onednn=onednn))
    if out is None:
        return {"command": shown, "timeout": TIMEOUT_S}
    seconds = json.loads(out.strip().splitlines()[-1])["step_seconds"]
    return {"command": shown, **summary(windows(seconds, batch))}


def train_dist(image_size, precision, batch, steps, ranks=1, extra=(), env=None, prefix=()):
    """train_dist.py on synthetic data: 1 rank as a plain process, more through the launch plan.
    `extra` flags, `env` variables and a command `prefix` (e.g. taskset) are for comparisons."""
    with tempfile.TemporaryDirectory() as model_dir:
        args = train_dist_args(image_size, precision, batch, steps, model_dir, ranks, extra)
        if ranks == 1:
            cmd = [*prefix, sys.executable, "train_dist.py"] + args
        else:
            cmd = [*prefix, os.path.join("launch", "horovodrun.sh"), "-np", str(ranks),
                   "--"] + args
        written = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        written = (written + " " + shown(cmd)).strip().replace(model_dir, "TMP")
        if _run(cmd, dict(_env(), **(env or {}))) is None:
            return {"command": written, "timeout": TIMEOUT_S}
        with open(os.path.join(model_dir, "metrics.json")) as f:
            metrics = json.load(f)
    # train_dist's own Throughput already left out its first steps (its warm-up).
    rates = windows(metrics["train_step_seconds"], batch * ranks, skip=0)
    return {"command": written, **summary(rates)}


def input_pipeline(data_path, batch, ranks, batches=60):
    """Per rank: decode the real JPEG tree from disk, then augment and batch with tf.data."""
    code = f"""
import json, time
from resnet.config import Config
from resnet.data import pipeline, sharding, source
t = time.perf_counter()
data = source.open_data({data_path!r}, Config(max_train_examples=10000, max_test_examples=1))
decode = len(data.train) / (time.perf_counter() - t)
shard = sharding.train_shard(len(data.train), 0, 0, 0, {ranks}, {batch})
ds = pipeline.train_dataset(data.train, shard, {batch}, 0, 0)
it = iter(ds); next(it)
t = time.perf_counter(); n = 0
for _ in range({batches}):
    next(it); n += {batch}
print(json.dumps({{"decode": decode, "augment": n / (time.perf_counter() - t)}}))
"""
    # One core, as a rank of the 2 x 1 plan has.
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(threads=1),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    wanted = sorted(f for f in topology.cpu_flags() or ()
                    if f.startswith(("avx512", "amx", "avx2", "avx_vnni", "fma")))
    import horovod
    import tensorflow as tf
    return {"cpu": model.group(1).strip() if model else "unknown",
            "logical_cpus": os.cpu_count(), "flags": wanted,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "horovod": horovod.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run(quick: bool, data_path: str, out_dir: str) -> dict:
    steps = 9 if quick else 12
    sizes = {32: SIZES[32]} if quick else SIZES
    result = {"machine": machine(), "warmup_steps": WARMUP, "window_steps": WINDOW,
              "steps": steps, "train": {}, "baseline": {},
              "baseline_onednn": {}}

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    for size, batch in sizes.items():
        for precision in ("fp32", "bf16"):
            key = f"{size}px_{precision}"
            log(f"bench: train_dist 1 rank {key} batch {batch}")
            result["train"][key] = train_dist(size, precision, batch, steps)
            if size == 32:
                log(f"bench: plain Keras {key} batch {batch}")
                result["baseline"][key] = plain_keras(size, precision, batch, steps)
                log(f"bench: plain Keras + TF_ENABLE_ONEDNN_OPTS=1 {key} batch {batch}")
                result["baseline_onednn"][key] = plain_keras(size, precision, batch, steps, True)
    log("bench: 2 ranks x 1 core, 32px fp32")
    two_by_one = train_dist(32, "fp32", SIZES[32], steps, ranks=2)
    # The three figures the targets compare get a second round in reverse order (2x1, ours,
    # plain + oneDNN), windows pooled: the machine drifts over minutes, and a single run of each
    # put two settings minutes apart.
    log("bench: second round, reverse order: 2x1, train_dist, plain Keras + oneDNN (32px fp32)")
    two_by_one = pool(two_by_one, train_dist(32, "fp32", SIZES[32], steps, ranks=2))
    for group, again in (("train", lambda: train_dist(32, "fp32", SIZES[32], steps)),
                         ("baseline_onednn",
                          lambda: plain_keras(32, "fp32", SIZES[32], steps, True))):
        result[group]["32px_fp32"] = pool(result[group]["32px_fp32"], again())
    result["rounds_32px_fp32"] = 2
    result["scaling"] = {"1x2": result["train"]["32px_fp32"], "2x1": two_by_one}
    log("bench: input pipeline")
    result["pipeline"] = input_pipeline(data_path, SIZES[32], 2)
    log("bench: ceiling")
    result["ceiling"] = json.loads(_run(
        [sys.executable, "-m", "benchmarks.ceiling",
         f"--sizes={','.join(str(s) for s in sizes)}", "--train_from=conv1"],
        _env()).strip().splitlines()[-1])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _fmt(s):
    if "timeout" in s:
        return f"< {s['timeout']} s run: timed out"
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def _ratio(a, b):
    return f"{a['median'] / b['median']:.2f}" if "median" in a and "median" in b else "-"


def _pct_of_ceiling(r: dict, size: int, precision: str, figure: dict) -> str:
    c = r.get("ceiling")
    # Every stage trains in the harness's runs (common.train_dist_args).
    if not c or "median" not in figure or str(size) not in c.get("train_flops", {}).get(
            "conv1", {}):
        return "-"
    flops = c["train_flops"]["conv1"][str(size)]
    return f"{100 * figure['median'] * flops / 1e9 / c['ceiling'][precision]['conv_gflops']:.0f}%"


def _onednn_note(flags) -> str:
    if onednn_by_default(flags):
        return ("Plain Keras as a user runs it leaves `TF_ENABLE_ONEDNN_OPTS` unset; on this CPU "
                "(AVX-512 VNNI/BF16 or AMX) TensorFlow then turns oneDNN on by itself, so the "
                "first two columns are the same setting, measured in two processes: their "
                "difference is this machine's process-to-process spread.")
    return ("Plain Keras as a user runs it leaves `TF_ENABLE_ONEDNN_OPTS` unset, which on a CPU "
            "without AVX-512 VNNI/BF16 or AMX means oneDNN's kernels are off; the middle column "
            "turns them on, to separate that from the rest.")


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [START, "",
             f"Measured {m['date']} by `.venv/bin/python -m benchmarks.harness` on: {m['cpu']}, "
             f"{m['logical_cpus']} logical CPUs, flags {' '.join(m['flags']) or 'none of note'}; "
             f"Python {m['python']}, TensorFlow {m['tensorflow']}, Horovod {m['horovod']}. "
             f"Images/s, median (min-max) of {WINDOW}-step windows after {WARMUP} warm-up steps, "
             f"{r['steps']} steps per run, synthetic data, `--weights=none` (same compute). "
             + ("The 32px fp32 figures of plain Keras + oneDNN, train_dist.py and 2 ranks x 1 "
                "core pool the windows of two rounds, run in forward then reverse order."
                if r.get("rounds_32px_fp32") == 2 else ""), "",
             "### train_dist.py (1 rank, 2 cores) against plain Keras model.fit", "",
             _onednn_note(m["flags"]), "",
             "| setting | plain Keras | plain Keras + oneDNN | train_dist.py | vs plain | "
             "vs plain + oneDNN |", "| --- | --- | --- | --- | --- | --- |"]
    for key, base in r["baseline"].items():
        ours, onednn = r["train"][key], r["baseline_onednn"][key]
        lines.append(f"| {key.replace('_', ' ')}, batch {SIZES[int(key.split('px')[0])]} | "
                     f"{_fmt(base)} | {_fmt(onednn)} | {_fmt(ours)} | {_ratio(ours, base)} | "
                     f"{_ratio(ours, onednn)} |")
    lines += ["", "### float32 against bf16 (mixed_bfloat16), train_dist.py 1 rank", "",
              "| image size | batch | fp32 | bf16 | bf16 / fp32 | % of ceiling, fp32 / bf16 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for size in sorted({int(k.split("px")[0]) for k in r["train"]}):
        f32, b16 = r["train"][f"{size}px_fp32"], r["train"][f"{size}px_bf16"]
        lines.append(f"| {size} | {SIZES[size]} | {_fmt(f32)} | {_fmt(b16)} | "
                     f"{_ratio(b16, f32)} | {_pct_of_ceiling(r, size, 'fp32', f32)} / "
                     f"{_pct_of_ceiling(r, size, 'bf16', b16)} |")
    if "ceiling" in r:
        c = r["ceiling"]["ceiling"]
        lines += ["", "This machine's ceiling (`python -m benchmarks.ceiling`, GFLOP/s): "
                  + "; ".join(f"{pr}: matmul 2048^2 {v['matmul_gflops']:.0f}, 3x3 conv "
                              f"{v['conv_gflops']:.0f}" for pr, v in c.items())
                  + ". `% of ceiling`: images/s x 3 x the forward FLOPs per image (forward, "
                  "input and weight gradients; every stage trains here) over the conv rate."]
    s = r["scaling"]
    lines += ["", "### 1 rank x 2 cores against 2 ranks x 1 core (32px fp32, batch 64 per rank)",
              "", "| layout | images/s (all ranks) |", "| --- | --- |",
              f"| 1 rank x 2 cores | {_fmt(s['1x2'])} |", f"| 2 ranks x 1 core | {_fmt(s['2x1'])} |",
              "", f"2 ranks x 1 core / 1 rank x 2 cores: "
              f"{_ratio(s['2x1'], s['1x2'])}. On 2 cores, \"2 ranks x half the "
              "cores\" is the same layout as 2 x 1.", ""]
    p = r["pipeline"]
    per_rank_need = s["2x1"].get("median", 0) / 2 or 1e-9
    lines += ["### Input pipeline alone, per rank (1 core)", "",
              f"- decoding the real JPEG tree from disk: {p['decode']:.0f} images/s "
              "(once per run, before training)",
              f"- tf.data crop + flip + batch from memory: {p['augment']:.0f} images/s, "
              f"{p['augment'] / per_rank_need:.0f}x what a rank of the 2 x 1 layout trains "
              f"({per_rank_need:.1f} images/s)", "", "Commands:", ""]
    for group in ("baseline", "baseline_onednn", "train"):
        for key, v in r[group].items():
            lines.append(f"- `{v['command']}`")
    lines.append(f"- `{s['2x1']['command']}`")
    lines += ["", END]
    return "\n".join(lines)


def write_markdown(r: dict, path: str) -> None:
    text = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + markdown(r) + tail)


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                  "cifar-10-images.tar.gz"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    p.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"))
    a = p.parse_args()
    t = time.time()
    result = run(a.quick, a.data, a.out)
    write_markdown(result, a.markdown)
    print(f"bench: done in {(time.time() - t) / 60:.1f} min; wrote {a.out}/bench.json and "
          f"{a.markdown}", file=sys.stderr)


if __name__ == "__main__":
    main()
