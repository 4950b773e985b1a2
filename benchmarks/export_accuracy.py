"""A bf16 export against the fp32 one, on every test image: what serving in bf16 costs in accuracy.

  .venv/bin/python -m benchmarks.export_accuracy --model_dir=runs/resnet_cifar10

Exports MODEL_DIR twice with export.py (--precision=fp32 and bf16, to a temporary base path) and
scores every test image of a class-folder archive (default: ../shared's CIFAR-10, 10,000 JPEGs)
through each SavedModel's serving_default, fed the encoded bytes as a server is. Prints each
export's accuracy, the images whose top class differs between the two, and the largest
difference in a probability. Run it on a CPU with bf16 arithmetic (AMX, AVX512-BF16): elsewhere
bf16 is oneDNN's emulation, the same numbers far slower.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.common import ROOT
from benchmarks.inference import SHARED_DATA

BATCH = 64


def _test_images(archive: str, names):
    """[(label, encoded bytes)] of every file in a test/ class folder of the archive."""
    out = []
    with tarfile.open(archive) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and "test" in parts[:-2]:
                out.append((names.index(parts[-2]), tar.extractfile(m).read()))
    return out


def score(saved_model: str, images) -> dict:
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    probs, started = [], time.perf_counter()
    for start in range(0, len(images), BATCH):
        chunk = tf.constant([data for _, data in images[start:start + BATCH]])
        probs.append(serve(image_bytes=chunk)["probabilities"].numpy())
    return {"probabilities": np.concatenate(probs), "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a finished training run")
    p.add_argument("--data_dir", default=SHARED_DATA, help="a class-folder archive with test/")
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out", "export_accuracy.json"))
    a = p.parse_args(argv)
    with open(os.path.join(a.model_dir, "class_names.json")) as f:
        names = json.load(f)
    images = _test_images(a.data_dir, names)
    labels = np.array([label for label, _ in images])
    result = {"model_dir": os.path.abspath(a.model_dir), "images": len(images),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    scores = {}
    with tempfile.TemporaryDirectory() as work:
        for precision in ("fp32", "bf16"):
            base = os.path.join(work, precision)
            proc = subprocess.run([sys.executable, "export.py", f"--model_dir={a.model_dir}",
                                   f"--out={base}", f"--precision={precision}"], cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"export.py --precision={precision} failed:\n"
                                 f"{proc.stderr[-3000:]}")
            scores[precision] = score(os.path.join(base, "1"), images)
            top = scores[precision]["probabilities"].argmax(axis=1)
            result[precision] = {"accuracy": float((top == labels).mean()),
                                 "images_per_s": len(images) / scores[precision]["seconds"]}
            print(precision, json.dumps(result[precision]), flush=True)
    fp32, bf16 = (scores[k]["probabilities"] for k in ("fp32", "bf16"))
    result["top_class_differs"] = int((fp32.argmax(axis=1) != bf16.argmax(axis=1)).sum())
    result["max_probability_difference"] = float(np.abs(fp32 - bf16).max())
    result["accuracy_points_bf16_minus_fp32"] = round(
        100 * (result["bf16"]["accuracy"] - result["fp32"]["accuracy"]), 4)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
