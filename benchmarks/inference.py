"""Inference speed, in one run on one machine: the exported SavedModel against plain Keras
`model.predict` on the same weights, against the machine's own compute ceiling.

  .venv/bin/python -m benchmarks.inference                      # everything (tens of minutes)
  .venv/bin/python -m benchmarks.inference --sizes=32 --precisions=fp32 --cifar=2000   # a look

1. Ceiling: TensorFlow's own matmul (2048 x 2048) and 3x3 convolution (batch 32, 28x28x128 to
   128) in GFLOP/s, per precision.
2. For each image size and precision: an untrained ResNet50 head of 10 classes at that input
   size, exported by export.py's code at that precision; its `pixels` signature at batch 1
   (latency p50/p99 over single calls) and batch 64 (throughput), and plain Keras
   `model.predict` on the same weights (the tf_keras model at that precision), the same inputs.
   Images/s per core divide by the intra-op threads; `% of ceiling` is the model's forward
   FLOPs times images/s over the convolution ceiling.
3. With two precisions: their exports' batch-64 throughput again, the calls alternating
   (--interleaved rounds), and the median of each round's bf16 / fp32: the ratio the bars ask
   for, measured so that the machine's drift falls on both alike.
4. Batch inference of real CIFAR-10 test JPEGs (../shared, extracted to files): predict.py's
   streaming path (read, decode, prepare in tf.data, the default recipe's model: 32 px input
   resized to 96 inside) against `model.predict` on the same images decoded beforehand, two
   interleaved rounds; and predict.py's peak RSS at N/2 and N images (its memory bound).
Writes bench_out/inference.json and prints the tables BENCHMARKS.md carries.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from benchmarks.ceiling import ceiling, forward_flops
from benchmarks.common import ROOT, use_job_threads
from resnet import model as model_lib
from resnet.runtime import topology

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar-10-images.tar.gz")
CLASSES = [f"c{i}" for i in range(10)]


def _model_dir(side: int, image_size: int, work: str) -> str:
    """A finished run's folder for an untrained model: what export.py and predict.py read."""
    d = tempfile.mkdtemp(dir=work)
    tf.keras.mixed_precision.set_global_policy("float32")
    model = model_lib.build(len(CLASSES), image_size, "none", 0, input_size=side)
    model.save(os.path.join(d, "model.keras"))
    with open(os.path.join(d, "class_names.json"), "w") as f:
        json.dump(CLASSES, f)
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump({"flags": {"image_size": image_size, "precision": "fp32", "weights": "none"}},
                  f)
    return d


def _latency(call, repeats: int) -> dict:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p50_ms": 1e3 * times[len(times) // 2],
            "p99_ms": 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))]}


def _throughput(call, batch: int, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return batch * repeats / (time.perf_counter() - start)


def interleaved(serves: dict, size: int, cores: int, rounds: int) -> dict:
    """Batch-64 throughput of each precision's export, the calls alternating (the machine's
    speed drifts from minute to minute): images/s per core per call, and the median of each
    round's bf16 / fp32."""
    many = tf.constant(np.random.default_rng(1).integers(0, 256, (64, size, size, 3),
                                                         dtype=np.uint8))
    rates = {p: [] for p in serves}
    for serve in serves.values():
        serve(images=many)  # warm
    for r in range(rounds):
        order = list(serves) if r % 2 == 0 else list(serves)[::-1]
        for p in order:
            start = time.perf_counter()
            serves[p](images=many)
            rates[p].append(64 / (time.perf_counter() - start) / cores)
    out = {"size": size, "rounds": rounds,
           "images_per_s_per_core": {p: statistics.median(v) for p, v in rates.items()},
           "per_call": rates}
    if "fp32" in rates and "bf16" in rates:
        ratios = [b / f for b, f in zip(rates["bf16"], rates["fp32"])]
        out["bf16_over_fp32"] = {"median": statistics.median(ratios), "min": min(ratios),
                                 "max": max(ratios)}
    return out


def model_rows(size: int, precision: str, work: str, cores: int, ceil: dict, quick: bool,
               serves: Optional[dict] = None):
    from resnet.serving import export as export_lib
    d = _model_dir(size, size, work)
    path = export_lib.export(d, os.path.join(d, "export"), precision)
    serve = tf.saved_model.load(path).signatures["pixels"]
    if serves is not None:
        serves[precision] = serve
    model_lib.set_precision(precision, warn=False)
    keras_model = model_lib.build(len(CLASSES), size, "none", 0, input_size=size)
    keras_model.set_weights(tf.keras.models.load_model(os.path.join(d, "model.keras"),
                                                       compile=False).get_weights())
    tf.keras.mixed_precision.set_global_policy("float32")
    flops = forward_flops(keras_model, size)
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    many = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    slow = precision == "bf16" and size >= 96 and not _has_bf16()
    n1, n64 = (5, 1) if quick or slow else (50, 4)
    rows = []
    for what, call1, call64 in (
            ("SavedModel (export.py)", lambda: serve(images=tf.constant(one)),
             lambda: serve(images=tf.constant(many))),
            ("plain Keras model.predict", lambda: keras_model.predict(one, verbose=0),
             lambda: keras_model.predict(many, batch_size=64, verbose=0))):
        lat = _latency(call1, n1)
        rate = _throughput(call64, 64, n64)
        rows.append({"size": size, "precision": precision, "what": what, **lat,
                     "batch1_images_per_s_per_core": 1e3 / lat["p50_ms"] / cores,
                     "batch64_images_per_s_per_core": rate / cores,
                     "batch64_pct_of_conv_ceiling": 100 * rate * flops / 1e9 /
                     ceil[precision]["conv_gflops"], "forward_gflop": flops / 1e9})
    return rows


def _has_bf16() -> bool:
    return topology.has_bf16(topology.cpu_flags())


def _extract_test_jpegs(n: int, dest: str) -> list:
    """The first n of CIFAR-10's test JPEGs (n / 10 per class) as files; [(path, label)]."""
    per_class, out = n // 10, []
    with tarfile.open(SHARED_DATA) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and parts[0] == "test" and int(parts[-1][:4]) < per_class:
                folder = os.path.join(dest, parts[1])
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, parts[2])
                with open(path, "wb") as f:
                    f.write(tar.extractfile(m).read())
                out.append(path)
    return sorted(out)


def _peak_rss_mib(cmd) -> float:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def cifar_rows(n: int, work: str, cores: int) -> dict:
    from PIL import Image
    from resnet.serving import batch
    folder = os.path.join(work, "cifar-test")
    paths = _extract_test_jpegs(n, folder)
    d = _model_dir(32, 96, work)  # the default recipe: 32 px input, resized to 96 inside
    model = tf.keras.models.load_model(os.path.join(d, "model.keras"), compile=False)
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    streamed, held = [], []
    for _ in range(2):  # interleaved: the machine's speed drifts
        out = os.path.join(work, "scores.csv")
        stats = batch.predict(d, [folder], out, top=3, batch_size=64)
        streamed.append(stats["images_per_second"])
        start = time.perf_counter()
        model.predict(arrays, batch_size=64, verbose=0)
        held.append(len(arrays) / (time.perf_counter() - start))
    half = os.path.join(work, "half")
    os.makedirs(half)
    for p in paths[::2]:
        os.link(p, os.path.join(half, os.path.basename(os.path.dirname(p)) + "-" +
                                os.path.basename(p)))
    predict = [sys.executable, "predict.py", f"--model_dir={d}",
               f"--out={os.path.join(work, 'rss.csv')}"]
    return {"images": len(paths), "predict_py_images_per_s": statistics.median(streamed),
            "model_predict_on_arrays_images_per_s": statistics.median(held),
            "rounds": {"predict_py": streamed, "model_predict": held}, "cores": cores,
            "peak_rss_mib": {len(paths) // 2: _peak_rss_mib(predict + [half]),
                             len(paths): _peak_rss_mib(predict + [folder])}}


def _table(rows) -> str:
    lines = ["| size | precision | model | batch 1 p50 / p99 ms | batch 1 images/s/core | "
             "batch 64 images/s/core | % of conv ceiling |", "| --- | --- | --- | --- | --- | "
             "--- | --- |"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['precision']} | {r['what']} | {r['p50_ms']:.1f} / "
                     f"{r['p99_ms']:.1f} | {r['batch1_images_per_s_per_core']:.1f} | "
                     f"{r['batch64_images_per_s_per_core']:.1f} | "
                     f"{r['batch64_pct_of_conv_ceiling']:.0f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="32,96,224", help="input sizes (empty: none)")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--cifar", type=int, default=10000, help="CIFAR-10 test JPEGs (0: skip)")
    p.add_argument("--quick", action="store_true", help="few repeats: a check, not a figure")
    p.add_argument("--interleaved", type=int, default=8,
                   help="alternating batch-64 calls per precision and size, after the rows "
                        "(0: none)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "inference.json"))
    a = p.parse_args(argv)
    intra, _ = use_job_threads()
    precisions = a.precisions.split(",")
    result = {"cpu_flags": sorted(f for f in topology.cpu_flags() or () if "avx512" in f or
                                  "amx" in f or f in ("avx2", "fma")),
              "intra_op_threads": intra, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                               time.gmtime()),
              "ceiling": {pr: ceiling(pr) for pr in precisions}, "models": []}
    with tempfile.TemporaryDirectory() as work:
        result["interleaved"] = []
        for size in (int(s) for s in a.sizes.split(",") if s):
            serves = {}
            for precision in precisions:
                result["models"] += model_rows(size, precision, work, intra, result["ceiling"],
                                               a.quick, serves)
                print(_table(result["models"][-2:]), flush=True)
            if a.interleaved and len(serves) > 1:
                result["interleaved"].append(interleaved(serves, size, intra, a.interleaved))
                print(json.dumps({k: v for k, v in result["interleaved"][-1].items()
                                  if k != "per_call"}), flush=True)
        if a.cifar:
            result["cifar"] = cifar_rows(a.cifar, work, intra)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print("ceiling (GFLOP/s):", json.dumps(result["ceiling"]))
    print(_table(result["models"]))
    for row in result["interleaved"]:
        print(json.dumps({k: v for k, v in row.items() if k != "per_call"}))
    if a.cifar:
        print(json.dumps(result["cifar"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
