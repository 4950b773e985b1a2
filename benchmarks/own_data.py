"""Proof on real data: the real CIFAR-10 re-encoded as a class-folder tree of 96x96 JPEGs and as
TFRecords, trained by one fixed short recipe through the streaming path and through the
in-memory path, under a real 2-rank horovodrun.

  .venv/bin/python -m benchmarks.own_data                     # about 30 minutes on 2 AVX2 cores
  .venv/bin/python -m benchmarks.own_data --seeds=0 --paths=stream,memory   # one of each

The tree (../shared/data/cifar-10-images.tar.gz, each image resized 32 -> 96 px with Pillow's
bicubic filter, JPEG quality 90) and the TFRecords are written once under --work and reused.
Both paths then see the same 96 px JPEGs with the same sharding and augmentation (a random
resized crop at 96 px and a flip); they differ in how the pixels reach tf.data (decoded once by
Pillow and held, or read and decoded by TensorFlow every epoch). The run-to-run spread is
measured the same way: the same path with another --seed. Results go to
bench_out/own_data.json and a table to stdout.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time

from benchmarks.common import ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
CIFAR_IMAGES = os.path.join(SHARED, "data", "cifar-10-images.tar.gz")
WEIGHTS = os.path.join(SHARED, "weights", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
RECIPE = ["--image_size=96", "--epochs=1", "--batch_size=32", "--max_train_examples=6000",
          "--warmup_epochs=0.1", "--hang_timeout=0"]


def reencode(source: str, out: str, size: int = 96, limit_per_class=None) -> str:
    """The image-folder tree in `source` (.tar.gz) as size x size JPEGs under `out`, written
    whole or not at all (into out.partial, renamed at the end). limit_per_class: the first N
    files of each class folder of each split, for a small copy."""
    from PIL import Image
    if os.path.isdir(out):
        return out
    tmp = out + ".partial"
    counts = {}
    with tarfile.open(source, "r:*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            key = (parts[-3], parts[-2])
            counts[key] = counts.get(key, 0) + 1
            if limit_per_class and counts[key] > limit_per_class:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                big = image.convert("RGB").resize((size, size), Image.BICUBIC)
            folder = os.path.join(tmp, *parts[-3:-1])
            os.makedirs(folder, exist_ok=True)
            name = os.path.splitext(parts[-1])[0] + ".jpg"
            big.save(os.path.join(folder, name), quality=90)
    os.rename(tmp, out)
    return out


def train(data_dir: str, model_dir: str, loading: str, seed: int, extra=()) -> dict:
    cmd = [os.path.join(ROOT, "launch", "horovodrun.sh"), "-np", "2", "--",
           f"--data_dir={data_dir}", f"--model_dir={model_dir}", f"--weights={WEIGHTS}",
           f"--data_loading={loading}", f"--seed={seed}", *RECIPE, *extra]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return {"command": " ".join(["launch/horovodrun.sh"] + cmd[1:]).replace(ROOT + "/", ""),
            "test_accuracy": metrics["test_accuracy"], "test_examples": metrics["test_examples"],
            "images_per_second": metrics["images_per_second"],
            "minutes": (time.time() - started) / 60}


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.own_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/own_data")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--paths", default="stream,memory,tfrecords")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "own_data.json"))
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    tree = reencode(CIFAR_IMAGES, os.path.join(args.work, "cifar10-96px"))
    records = os.path.join(args.work, "cifar10-96px-tfrecords")
    if not os.path.isdir(records):
        subprocess.run([sys.executable, "-m", "resnet.data.tfrecords", tree, records], cwd=ROOT,
                       check=True)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for path in args.paths.split(","):
            data = records if path == "tfrecords" else tree
            loading = "auto" if path == "tfrecords" else path
            run_dir = os.path.join(args.work, f"run-{path}-seed{seed}")
            subprocess.run(["rm", "-rf", run_dir], check=True)
            row = {"path": path, "seed": seed, **train(data, run_dir, loading, seed)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
    print("| path | seed | test accuracy | images/s (2 ranks) | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['path']} | {r['seed']} | {r['test_accuracy']:.4f} | "
              f"{r['images_per_second']:.1f} | {r['minutes']:.1f} |")


if __name__ == "__main__":
    main()
