"""What a run leaves behind: the model, its class names, metrics.json and the pictures.

Rank 0 alone writes (the callers gate on world.is_chief); every write goes through a temporary
name and a rename, so an interrupted run never leaves a half-written file under a final name.
"""

import os
import platform
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from resnet import fileio
from resnet.config import Config
from resnet.errors import UsageError
from resnet.training import report
from resnet.training.schedule import global_batch_size

MODEL_FILE = "model.keras"
CLASS_NAMES_FILE = "class_names.json"


def check_model_dir(model_dir: str) -> None:
    """Refuse a --model_dir this job cannot write, before anything slow; create nothing (a run
    refused later, e.g. for bad data, must leave no trace). The first checkpoint makes it."""
    existing = os.path.abspath(model_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        if existing != os.path.abspath(model_dir):
            if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
                raise OSError(13, f"cannot create folders in {existing}")
            return
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"--model_dir={model_dir}: not writable ({e.strerror}); give a folder "
                         "this job can write") from e


def _keras_version() -> str:
    import tf_keras  # what tf.keras is under TF_USE_LEGACY_KERAS=1 (resnet/__init__.py)
    return tf_keras.__version__


def versions() -> dict:
    import horovod
    return {"tensorflow": tf.__version__, "keras": _keras_version(),
            "horovod": horovod.__version__, "python": platform.python_version(),
            "numpy": np.__version__}


def metrics_dict(config: Config, world, test_metrics: dict, history: list, extra: dict) -> dict:
    return {**test_metrics, "history": history, "world_size": world.size,
            "global_batch_size": global_batch_size(config, world.size), "flags": config.to_dict(),
            "versions": versions(), "command": " ".join(sys.argv), **extra}


def save_model(config: Config, model, class_names) -> None:
    tmp = os.path.join(config.model_dir, ".tmp-" + MODEL_FILE)
    # An uncompiled view of the same layers: the file then holds no Horovod optimizer or custom
    # schedule, and plain tf.keras.models.load_model opens it without this package.
    tf.keras.Model(model.inputs, model.outputs, name=model.name).save(tmp)
    os.replace(tmp, os.path.join(config.model_dir, MODEL_FILE))
    fileio.write_json_atomic(os.path.join(config.model_dir, CLASS_NAMES_FILE), list(class_names))


def finish(config: Config, world, model, test_metrics: dict, history: list, extra: dict,
           class_names) -> dict:
    """metrics.json and its pictures, and the trained model (`model`, unless None), by rank 0."""
    metrics = metrics_dict(config, world, test_metrics, history, extra)
    if world.is_chief:
        os.makedirs(config.model_dir, exist_ok=True)
        if model is not None:
            save_model(config, model, class_names)
        path = report.write(config.model_dir, metrics, class_names)
        logging.info("test accuracy %.4f on %d images on %d rank(s); wrote %s",
                     metrics["test_accuracy"], metrics["test_examples"], world.size, path)
    return metrics
