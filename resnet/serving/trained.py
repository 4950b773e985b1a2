"""What a finished run left in --model_dir, loaded and checked: the model, its class names, and
how images reach it.

Every way of using a trained model (the SavedModel export, batch inference from model.keras)
starts here, so a model_dir without a model, with a missing or corrupt class_names.json, or a
model and names that disagree, is refused the same way: UsageError, exit 2, nothing written.
"""

import dataclasses
import json
import os
from typing import List

from resnet.errors import UsageError
from resnet.training.report import METRICS as METRICS_FILE
from resnet.training.results import CLASS_NAMES_FILE, MODEL_FILE


@dataclasses.dataclass(frozen=True)
class Trained:
    model_dir: str
    model: object  # the tf.keras model of model.keras (Keras 2: tf_keras)
    class_names: List[str]
    settings: dict  # the run's flags, as metrics.json records them ({} if it has none)

    @property
    def side(self) -> int:
        """The side of the square uint8 images the model takes."""
        return int(self.model.input_shape[1])

    @property
    def resizes(self) -> bool:
        """Whether the model resizes its input itself (trained on small images held in memory,
        CIFAR's path): then an image of any size is resized whole to `side`; otherwise it is
        prepared as the pipeline prepared the test images (resnet.data.images.test_image)."""
        return any(layer.name == "resize" for layer in self.model.layers)


def class_names(model_dir: str) -> List[str]:
    path = os.path.join(model_dir, CLASS_NAMES_FILE)
    try:
        with open(path) as f:
            names = json.load(f)
    except OSError as e:
        raise UsageError(f"--model_dir={model_dir}: cannot read {CLASS_NAMES_FILE} ({e.strerror}); "
                         "it is written beside the model when training finishes: give the "
                         "--model_dir of a finished run") from e
    except ValueError as e:
        raise UsageError(f"{path}: not JSON ({e}); it is written beside the model when training "
                         "finishes: restore it from the run, or train again") from e
    if (not isinstance(names, list) or len(names) < 2
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names)):
        raise UsageError(f"{path}: not a list of two or more distinct class names; restore it "
                         "from the run, or train again")
    return names


def check(model_dir: str) -> List[str]:
    """The class names of a finished run whose model file is there, without loading it."""
    if not os.path.isfile(os.path.join(model_dir, MODEL_FILE)):
        raise UsageError(f"--model_dir={model_dir}: no {MODEL_FILE}; train first (the model is "
                         "saved when training finishes)")
    return class_names(model_dir)


def load(model_dir: str) -> Trained:
    import tensorflow as tf
    names = check(model_dir)
    path = os.path.join(model_dir, MODEL_FILE)
    try:
        model = tf.keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot load ({e}); it is truncated or not this job's model: "
                         "train again") from e
    outputs = int(model.output_shape[-1])
    if outputs != len(names):
        raise UsageError(f"{path} has {outputs} outputs but {CLASS_NAMES_FILE} names "
                         f"{len(names)} classes: they come from different runs")
    settings = {}
    try:
        with open(os.path.join(model_dir, METRICS_FILE)) as f:
            settings = json.load(f).get("flags", {})
    except (OSError, ValueError):
        pass  # only needed to rebuild at another precision (export)
    return Trained(model_dir, model, names, settings)
