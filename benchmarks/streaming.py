"""Streaming a class-folder tree of large JPEGs: one rank's peak memory as the tree grows, and
its input pipeline's images/s at 224 px against what a rank trains at that size.

  .venv/bin/python -m benchmarks.streaming --tree=/tmp/stream_tree   # about 15 minutes

Writes (once; reused after) a tree of --images JPEGs of 256x256, 100 classes, smooth random
content at about photo-like sizes, and beside it a tree with the first half of every class
(hard links). For each tree, in its own process on one core (a rank of the 2 x 1 layout):
index it as train_dist.py does (source.open_data, --data_loading=stream), then run --batches
batches of the training pipeline at 224 px (decode, random resized crop, flip) and report
images/s and the process's peak RSS; the same for the half tree converted to TFRecords. Then the training step at 224 px of one rank on one core
(train_dist.py, synthetic data, the default --train_from=conv4, fp32). Raw figures go to
bench_out/streaming.json.
"""

import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import ROOT, train_dist_args

CLASSES = 100
SIZE, CROP, BATCH = 256, 224, 32


def _write_class(args):
    root, c, per_class = args
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(c)
    folder = os.path.join(root, "train", f"class{c:03d}")
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
        small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR), np.int16)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def make_trees(tree: str, images: int):
    """(full tree, half tree): written once, the half one as hard links into the full one."""
    import multiprocessing
    per_class = images // CLASSES
    half = tree + "-half"
    if not os.path.isdir(os.path.join(tree, "train")):
        tmp = tree + ".partial"
        with multiprocessing.Pool(os.cpu_count()) as pool:
            pool.map(_write_class, [(tmp, c, per_class) for c in range(CLASSES)])
        os.rename(tmp, tree)
    if not os.path.isdir(half):
        for c in range(CLASSES):
            src = os.path.join(tree, "train", f"class{c:03d}")
            dst = os.path.join(half + ".partial", "train", f"class{c:03d}")
            os.makedirs(dst)
            for name in sorted(os.listdir(src))[:per_class // 2]:
                os.link(os.path.join(src, name), os.path.join(dst, name))
        os.rename(half + ".partial", half)
    return tree, half


def worker(tree: str, batches: int) -> None:
    import resource
    import time
    from resnet.config import Config
    from resnet.data import pipeline, sharding, source
    t = time.perf_counter()
    data = source.open_data(tree, Config(data_loading="stream", validation_fraction=0.02))
    indexed = time.perf_counter() - t
    rss_indexed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shard = sharding.train_shard(len(data.train), 0, 0, 0, 1, BATCH)
    ds = pipeline.train_dataset(data.train, shard, BATCH, 0, 0, len(data.class_names),
                                image_size=CROP)
    it = iter(ds)
    for _ in range(3):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * BATCH / (time.perf_counter() - t)
    print(json.dumps({"images": len(data.train) + len(data.test), "index_seconds": indexed,
                      "images_per_second": rate, "peak_rss_mib_indexed": rss_indexed,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _env(threads: int = 1) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS="1")
    return env


def measure_tree(tree: str, batches: int) -> dict:
    # One core, one intra-op thread: a rank of the 2 x 1 layout.
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "benchmarks.streaming",
                          "--worker", tree, f"--batches={batches}"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_rate(steps: int = 6) -> dict:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        args = train_dist_args(CROP, "fp32", 8, steps, tmp)
        args = [a for a in args if not a.startswith("--train_from")]  # the default, conv4
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "train_dist.py"] + args,
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        with open(os.path.join(tmp, "metrics.json")) as f:
            metrics = json.load(f)
    seconds = sorted(metrics["train_step_seconds"])[len(metrics["train_step_seconds"]) // 2] \
        if isinstance(metrics["train_step_seconds"], list) else metrics["train_step_seconds"]
    return {"images_per_second": 8 / seconds, "command": "taskset -c 0 .venv/bin/python "
            "train_dist.py " + " ".join(args)}


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--tree", default="/tmp/stream_tree")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "streaming.json"))
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.batches)
    full, half = make_trees(args.tree, args.images)
    records = half + "-tfrecords"
    if not os.path.isdir(records):
        from resnet.data import tfrecords
        tfrecords.convert(half, records, shard_mb=100, validation_fraction=0.02)
    rows = {"half": measure_tree(half, args.batches), "full": measure_tree(full, args.batches),
            "tfrecords": measure_tree(records, args.batches)}
    rows["train_224"] = train_rate()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
    for name in ("half", "full", "tfrecords"):
        r = rows[name]
        print(f"{name}: {r['images']} JPEGs: indexed in {r['index_seconds']:.1f} s; pipeline "
              f"{r['images_per_second']:.1f} images/s at {CROP} px; peak RSS "
              f"{r['peak_rss_mib_indexed']:.0f} MiB after indexing, {r['peak_rss_mib']:.0f} MiB "
              "after the batches")
    print(f"training at {CROP} px, 1 rank x 1 core: {rows['train_224']['images_per_second']:.2f} "
          f"images/s ({rows['train_224']['command']})")


if __name__ == "__main__":
    main()
