"""Named recipes: each a small override of Config's defaults, with what it measured and when.

  python train_dist.py --preset=best ...      # flags given on the command line still win

The defaults are themselves the fastest measured route to 90% ("fast" names them), so a run
without --preset or flags trains that recipe. Every figure is on the real CIFAR-10 and all 10,000
test images; its command and the machine are in BENCHMARKS.md.
"""

import dataclasses
from typing import Dict

from resnet.config import Config
from resnet.errors import UsageError

PRESETS: Dict[str, dict] = {
    # The defaults: 96 px, conv1-conv3 frozen, 2 epochs, global batch 64 at peak rate 0.004
    # (2 ranks x 32), precision auto. Accuracy and minutes per CPU: BENCHMARKS.md, Accuracy.
    "fast": {},
    # The best 2-epoch accuracy measured: 160 px, peak rate ramped from 0, each test image also
    # scored mirrored. Measured at 1 rank x 64 at 0.004 (BENCHMARKS.md, Accuracy); here 32 per
    # rank at 0.002, the same global batch and peak rate at 2 ranks.
    "best": {"image_size": 160, "warmup_from": "zero", "test_time_flip": True},
    # A first run on a laptop: a tiny subset, small images, one epoch, a log line per step and
    # TensorFlow's op placement (--debug). About a minute on 2 cores; its accuracy means nothing.
    "debug": {"debug": True, "image_size": 32, "epochs": 1, "train_from": "conv1"},
}


def apply(name: str, explicit: dict) -> Config:
    """Config's defaults, then preset `name`'s overrides, then the `explicit` values (the flags
    given on the command line), which win."""
    if name and name not in PRESETS:
        raise UsageError(f"--preset={name}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS.get(name, {}), **explicit}
    unknown = set(values) - {f.name for f in dataclasses.fields(Config)}
    if unknown:  # a preset naming a field that does not exist is a bug here, not user input
        raise KeyError(f"preset {name!r}: no such Config fields: {sorted(unknown)}")
    return Config(preset=name, **values)
