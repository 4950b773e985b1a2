"""train_dist.py run as it is, with one more Keras callback in every fit: for the test scripts
that make a real job misbehave at a known step (dist_stall_check.py, signal_at_step.py)."""

import os
import runpy
import sys

from resnet.training import callbacks as cb

TRAIN_DIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "train_dist.py")


def run(extra_callback=None) -> None:
    """Run train_dist.py with this process's argv; `extra_callback` (None: none) joins every
    fit's callbacks, after the job's own."""
    if extra_callback is not None:
        fit_callbacks = cb.fit_callbacks
        cb.fit_callbacks = lambda *a, **k: fit_callbacks(*a, **k) + [extra_callback]
    sys.argv[0] = TRAIN_DIST
    runpy.run_path(TRAIN_DIST, run_name="__main__")
