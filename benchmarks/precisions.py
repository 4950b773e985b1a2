"""Which bf16: train_dist.py at each --precision, side by side in one run (issue 30, item 4).

  .venv/bin/python -m benchmarks.precisions                       # every setting, 2 rounds
  .venv/bin/python -m benchmarks.precisions --settings=recipe96 --precisions=fp32,bf16_amp
  .venv/bin/python -m benchmarks.precisions --precisions=bf16,bf16+tf_kernels   # --noown_kernels

Each measurement is its own process (a precision is a process's: Keras's global policy, the
graph pass, oneDNN's math mode read once), one after another, never two at once. The rounds
alternate the order of the precisions, so a slow spell of a shared machine falls on each in
turn; each figure pools the 3-step windows of its rounds (benchmarks.harness). `% of ceiling`:
the step's FLOPs as benchmarks.ceiling counts them (the forward pass and the trained layers' two
gradients) against its conv rate at fp32 for fp32 and at bf16 for the three bf16 modes.
Raw figures: bench_out/precisions.json; the table goes to stdout for BENCHMARKS.md.
"""

import argparse
import json
import os
import sys
import time

from benchmarks import harness
from benchmarks.common import ROOT
from resnet.config import PRECISIONS

# name -> (image size, batch, the first stage that trains)
SETTINGS = {
    "recipe96": (96, 64, "conv4"),  # the default recipe, 1 rank
    "layers128": (128, 32, "conv4"),  # its layers at 128 px
    "all224": (224, 16, "conv1"),  # every stage training at ImageNet's size
    "tiny": (32, 8, "conv5"),  # a smoke run (tests)
}
DEFAULT_SETTINGS = "recipe96,layers128,all224"
DEFAULT_PRECISIONS = "fp32,bf16,bf16_amp,bf16_fpmath"


def _parse(text: str, known, what: str) -> list:
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise SystemExit(f"error: --{what}={text}: use some of {', '.join(known)}, "
                         "comma-separated")
    return names


# A precision's variant: train_dist.py's flags that make it (+tf_kernels: TensorFlow's own
# kernels where the job has its own, resnet/kernels).
VARIANTS = {"tf_kernels": ["--noown_kernels"]}


def _extra(stage: str) -> list:
    """train_dist.py's flags on top of the harness's (which trains every stage)."""
    return [] if stage == "conv1" else [f"--train_from={stage}"]


def _split(precision: str):
    """'bf16+tf_kernels' -> ('bf16', ['--noown_kernels'])."""
    base, *variants = precision.split("+")
    return base, [flag for v in variants for flag in VARIANTS[v]]


def run(settings, precisions, rounds: int, steps: int) -> dict:
    result = {"machine": harness.machine(), "steps": steps, "rounds": rounds,
              "window_steps": harness.WINDOW, "figures": {}}
    for r in range(rounds):
        order = precisions if r % 2 == 0 else precisions[::-1]
        for name in settings:
            size, batch, stage = SETTINGS[name]
            for precision in order:
                print(f"bench: round {r + 1}/{rounds} {name} {precision}", file=sys.stderr,
                      flush=True)
                base, flags = _split(precision)
                figure = harness.train_dist(size, base, batch, steps,
                                            extra=_extra(stage) + flags)
                key = f"{name} {precision}"
                seen = result["figures"].get(key)
                result["figures"][key] = figure if seen is None else harness.pool(seen, figure)
    sizes = sorted({SETTINGS[n][0] for n in settings})
    stages = sorted({SETTINGS[n][2] for n in settings})
    out = harness._run([sys.executable, "-m", "benchmarks.ceiling",
                        f"--sizes={','.join(map(str, sizes))}",
                        f"--train_from={','.join(stages)}"], harness._env())
    result["ceiling"] = json.loads(out.strip().splitlines()[-1]) if out else None
    return result


def _pct(result, name, precision, figure) -> str:
    size, _, stage = SETTINGS[name]
    c = result.get("ceiling")
    if not c or "median" not in figure or stage not in c.get("train_flops", {}):
        return "-"  # no ceiling run, or one from before steps were counted with stages frozen
    rate = c["ceiling"]["fp32" if _split(precision)[0] == "fp32" else "bf16"]["conv_gflops"]
    gflops = figure["median"] * c["train_flops"][stage][str(size)] / 1e9
    return f"{100 * gflops / rate:.0f}%"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Measured {m['date']} by `.venv/bin/python -m benchmarks.precisions` on {m['cpu']}, "
             f"{m['logical_cpus']} logical CPUs, flags {' '.join(m['flags']) or 'none of note'}; "
             f"TensorFlow {m['tensorflow']}. train_dist.py, 1 rank, synthetic data; images/s, "
             f"median (min-max) of {result['window_steps']}-step windows, {result['rounds']} "
             f"round(s) of {result['steps']} steps, the order of the precisions alternating.", "",
             "| setting | precision | images/s | / fp32 | % of ceiling |",
             "| --- | --- | --- | --- | --- |"]
    for key, figure in result["figures"].items():
        name, precision = key.split(" ")
        size, batch, stage = SETTINGS[name]
        extra = _extra(stage)
        fp32 = result["figures"].get(f"{name} fp32", {})
        lines.append(f"| {name}: {size} px, batch {batch}{', ' + ' '.join(extra) if extra else ''}"
                     f" | {precision} | {harness._fmt(figure)} | {harness._ratio(figure, fp32)} | "
                     f"{_pct(result, name, precision, figure)} |")
    c = result.get("ceiling")
    if c:
        lines += ["", "Ceiling (`python -m benchmarks.ceiling`, 3x3 conv GFLOP/s): " + ", ".join(
            f"{p} {v['conv_gflops']:.0f}" for p, v in c["ceiling"].items()) + "."]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks.precisions",
                                description=__doc__.split("\n")[0])
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help=", ".join(SETTINGS))
    p.add_argument("--precisions", default=DEFAULT_PRECISIONS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default=os.path.join(ROOT, "bench_out"))
    a = p.parse_args()
    settings = _parse(a.settings, SETTINGS, "settings")
    known = [x for x in PRECISIONS if x != "auto"]
    precisions = _parse(a.precisions, known + [f"{x}+{v}" for x in known for v in VARIANTS],
                        "precisions")
    if a.rounds < 1 or a.steps < harness.WINDOW:
        raise SystemExit(f"error: --rounds={a.rounds} --steps={a.steps}: at least 1 round of "
                         f"{harness.WINDOW} steps")
    start = time.time()
    result = run(settings, precisions, a.rounds, a.steps)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "precisions.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(markdown(result))
    print(f"bench: done in {(time.time() - start) / 60:.1f} min; wrote "
          f"{a.out}/precisions.json", file=sys.stderr)


if __name__ == "__main__":
    main()
