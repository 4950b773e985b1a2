"""Checkpoints that a kill at any moment cannot corrupt, and the newest good one to resume from.

Layout: <model_dir>/checkpoints/ckpt-<epoch>-<step>/ holding the tf.train.Checkpoint files,
state.json (where training stands: epoch, step in epoch, phase, config) and manifest.json (the
sha256 of every other file). A checkpoint is written under a temporary name, every file fsynced,
then renamed into place: a checkpoint directory with its final name is complete. A newest one that
fails its manifest anyway (disk trouble, someone's hands) is skipped with a warning.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import List, Optional

import tensorflow as tf
from absl import logging

from resnet import fileio
from resnet.errors import UsageError

_NAME = re.compile(r"^ckpt-(\d{4})-(\d{6})$")
STATE = "state.json"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class State:
    epoch: int  # epochs fully done
    step: int  # steps done in epoch `epoch` (0: at an epoch boundary)
    phase: str  # 'head' (backbone frozen) or 'full'
    config: dict  # the Config that wrote it (image_size etc. for --eval_only)
    history: list  # per-epoch records so far
    # Positions of the epoch's order already trained on (sharding.train_shard's `start`): what a
    # resume with a different number of ranks (--elastic) needs, where `step` no longer fits.
    examples_done: int = 0
    # Under --conv_forms=auto, the layers each 'phase@image size' trains as matmuls: a resume
    # computes as the run it continues did, whatever machine (and timings) it lands on.
    conv_forms: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"ckpt-{self.epoch:04d}-{self.step:06d}"


def directory(model_dir: str) -> str:
    return os.path.join(model_dir, "checkpoints")


def save(model_dir: str, trackables: dict, state: State, keep: int) -> str:
    """Write a checkpoint atomically, then drop all but the newest `keep`. Chief only."""
    root = directory(model_dir)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{state.name}-", dir=root)
    try:
        tf.train.Checkpoint(**trackables).write(os.path.join(tmp, "vars"))
        fileio.write_json_atomic(os.path.join(tmp, STATE), dataclasses.asdict(state))
        files = sorted(f for f in os.listdir(tmp) if not f.startswith("."))
        manifest = {f: fileio.digest(os.path.join(tmp, f)) for f in files}
        fileio.write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
        for f in os.listdir(tmp):
            fileio.fsync(os.path.join(tmp, f))
        final = os.path.join(root, state.name)
        if os.path.exists(final):  # the same point re-written after a resume: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fileio.fsync(root)  # the rename itself reaches the disk
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in all_names(model_dir)[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def all_names(model_dir: str) -> List[str]:
    """Complete checkpoint names, oldest first (temporary ones are ignored and left to clean)."""
    root = directory(model_dir)
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if _NAME.match(n))


def verify(path: str) -> Optional[str]:
    """None if the checkpoint matches its manifest, else what is wrong."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        return f"no readable manifest ({e})"
    for name, digest in manifest.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if fileio.digest(file) != digest:
            return f"{name} does not match its checksum"
    return None


def latest(model_dir: str) -> Optional[str]:
    """The newest checkpoint that verifies; corrupt newer ones are reported and skipped."""
    for name in reversed(all_names(model_dir)):
        path = os.path.join(directory(model_dir), name)
        problem = verify(path)
        if problem is None:
            return path
        logging.warning("checkpoint %s is corrupt (%s); falling back to the one before it",
                        path, problem)
    return None


def read_state(path: str) -> State:
    with open(os.path.join(path, STATE)) as f:
        return State(**json.load(f))


def check_classes(path: str, num_classes: int) -> None:
    """Refuse to resume a checkpoint whose head has another number of classes than the data set
    (a --model_dir reused for another data set), before a restore fails on the shapes."""
    reader = tf.train.load_checkpoint(os.path.join(path, "vars"))
    # The head is the model's one 2-D kernel (2048 pooled features -> classes): ResNet50's
    # own kernels are all 4-D convolutions.
    heads = [shape[1] for name, shape in reader.get_variable_to_shape_map().items()
             if len(shape) == 2 and shape[0] == 2048 and "kernel" in name
             and "OPTIMIZER_SLOT" not in name]
    if heads and heads[0] != num_classes:
        raise UsageError(f"{path}: this checkpoint's model has {heads[0]} classes, the data set "
                         f"has {num_classes}; --model_dir holds a run on other data: give a new "
                         "--model_dir (or the --data_dir it was trained on)")


def restore(path: str, trackables: dict) -> None:
    tf.train.Checkpoint(**trackables).read(os.path.join(path, "vars")).expect_partial()
