"""The model batch inference runs: the exported SavedModel or the training run's model.keras,
whichever --model_dir names, behind one interface.

  a SavedModel version folder (saved_model.pb in it), or TF Serving's base path (the newest
  numbered version in it)  ->  its serving_default signature, fed the encoded bytes: the
                               decoding and preparation shipped in it are the ones that run
  a training --model_dir (model.keras)  ->  the Keras model, fed images the input pipeline
                               decoded and prepared in parallel by the same rule
                               (resnet.data.images.serving_image), computing as the export
                               does: BatchNorm folded into the convolutions (frozen.inference)
"""

import os
from typing import List, Optional

from resnet.data import images as images_lib
from resnet.data.splits import SMALL_IMAGE
from resnet.errors import UsageError
from resnet.serving import trained as trained_lib

SAVED_MODEL = "saved_model.pb"


def saved_model_version(path: str) -> Optional[str]:
    """The SavedModel folder `path` names (itself, or its newest numbered version), or None."""
    if os.path.isfile(os.path.join(path, SAVED_MODEL)):
        return path
    versions = sorted((int(n) for n in os.listdir(path) if n.isdigit() and
                       os.path.isfile(os.path.join(path, n, SAVED_MODEL))), reverse=True)
    return os.path.join(path, str(versions[0])) if versions else None


class Scorer:
    class_names: List[str]
    takes_bytes: bool  # fed encoded bytes (the SavedModel) or prepared float32 images

    def prepare(self, data):
        """tf.data's map for one image's encoded bytes."""
        raise NotImplementedError

    def __call__(self, batch):
        """Probabilities, a (batch, classes) numpy array."""
        raise NotImplementedError


class SavedModelScorer(Scorer):
    takes_bytes = True

    def __init__(self, path: str):
        import tensorflow as tf
        try:
            loaded = tf.saved_model.load(path)
            self._serve = loaded.signatures["serving_default"]
            self.class_names = [n.decode() for n in loaded.class_names.numpy()]
        except (OSError, KeyError, AttributeError, ValueError) as e:
            raise UsageError(f"--model_dir={path}: not a SavedModel of export.py ({e}); export "
                             "it again") from e
        self._loaded = loaded  # keeps the signature's variables alive

    def prepare(self, data):
        return data

    def __call__(self, batch):
        return self._serve(image_bytes=batch)["probabilities"].numpy()


class KerasScorer(Scorer):
    takes_bytes = False

    def __init__(self, trained: trained_lib.Trained):
        import tensorflow as tf
        from resnet.training import frozen  # TensorFlow: loaded once refusals are past
        self.class_names, self._trained = trained.class_names, trained
        model, side = trained.model, trained.side
        self._folds = frozen.Folds()  # the folded weights the traced function reads
        predict = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                              input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)])
        with frozen.inference(model, self._folds):
            self._predict = predict.get_concrete_function()

    def prepare(self, data):
        image = images_lib.tf_decode(data)
        return images_lib.serving_image(image, self._trained.side, self._trained.resizes,
                                        SMALL_IMAGE)

    def __call__(self, batch):
        return self._predict(batch).numpy()


def find(model_dir: str) -> Optional[str]:
    """The SavedModel --model_dir names, or None for a training run's folder whose model.keras
    and class names are there (checked without loading anything: refusals come first)."""
    if not os.path.isdir(model_dir):
        raise UsageError(f"--model_dir={model_dir}: no such folder; give a training run's "
                         "--model_dir or an export.py SavedModel")
    saved = saved_model_version(model_dir)
    if saved is None:
        trained_lib.check(model_dir)
    return saved


def open_scorer(model_dir: str) -> Scorer:
    saved = find(model_dir)
    return SavedModelScorer(saved) if saved else KerasScorer(trained_lib.load(model_dir))
