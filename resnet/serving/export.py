"""The trained model as a TensorFlow SavedModel in TF Serving's layout: OUT/VERSION/.

Two signatures, both returning the probabilities, the top class's index and its name:
  serving_default  `image_bytes`: a batch of encoded images (JPEG, PNG, any size), decoded and
                   prepared inside the graph exactly as the test images were
                   (resnet.data.images.serving_image)
  pixels           `images`: a uint8 batch at the model's input size, as the model takes it
The class names live in the SavedModel (a variable, and in every answer), not beside it. A
SavedModel holds graphs and variables only: a process with nothing but TensorFlow loads it
(tf.saved_model.load), whatever tf.keras is there, and TF Serving serves it as it is.

The graph is the model as inference computes it: every BatchNorm folded into the convolution
before it, the folded weights stored in the export's precision (resnet.training.frozen.inference;
no normalisation pass, no cast of a weight per call). Only the variables the signatures read are
saved.

Versions count up (1, 2, ...); each is written under a temporary name and renamed whole, so TF
Serving, which watches OUT for new numbered folders, never loads a half-written one.
"""

import os
import shutil
from typing import Optional

from resnet import model as model_lib
from resnet.data import images as images_lib
from resnet.data.splits import SMALL_IMAGE
from resnet.errors import UsageError
from resnet.serving import trained as trained_lib
from resnet.training import frozen

PRECISIONS = ("fp32", "bf16")
SIGNATURES = ("serving_default", "pixels")


def next_version(out: str) -> int:
    versions = [int(n) for n in os.listdir(out) if n.isdigit()] if os.path.isdir(out) else []
    return max(versions, default=0) + 1


def _at_precision(trained: trained_lib.Trained, precision: str):
    """The trained model, computing in `precision`: rebuilt from the run's settings under that
    policy with the trained weights (the same architecture, so the same weights in order)."""
    import tensorflow as tf
    if not trained.settings:  # refused before the policy changes: nothing of it stays behind
        raise UsageError(f"--model_dir={trained.model_dir}: no metrics.json flags to rebuild the "
                         f"model at --precision={precision}; export it at the precision it "
                         "trained at")
    model_lib.set_precision(precision, warn=True)
    model = model_lib.from_config(trained.settings, len(trained.class_names),
                                  lambda _: trained.side, weights="none")
    model.set_weights(trained.model.get_weights())
    tf.keras.mixed_precision.set_global_policy("float32")
    return model


def _module(trained: trained_lib.Trained, model):
    import tensorflow as tf
    side, resizes = trained.side, trained.resizes

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__(name="resnet50_classifier")
            self.class_names = tf.Variable(trained.class_names, trainable=False,
                                           name="class_names")
            self.input_size = tf.Variable(side, trainable=False, name="input_size")

        def _answer(self, pixels):
            probs = tf.cast(model(pixels, training=False), tf.float32)
            index = tf.argmax(probs, axis=1)
            return {"probabilities": probs, "class_index": index,
                    "class_name": tf.gather(self.class_names, index)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes):
            def prepare(data):
                image = images_lib.serving_image(images_lib.tf_decode(data), side, resizes,
                                                 SMALL_IMAGE)
                return tf.ensure_shape(image, [side, side, 3])
            pixels = tf.map_fn(prepare, image_bytes,
                               fn_output_signature=tf.TensorSpec([side, side, 3], tf.float32))
            return self._answer(pixels)

        @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.uint8,
                                                    name="images")])
        def serve_pixels(self, images):
            return self._answer(tf.cast(images, tf.float32))

    module = Classifier()
    traced = [module.serve_bytes.get_concrete_function(),
              module.serve_pixels.get_concrete_function()]
    # What the traced signatures read (the folded weights, the head): tracked, so saved.
    module.weights = list({id(v): v for f in traced for v in f.variables}.values())
    return module


def export(model_dir: str, out: Optional[str] = None, precision: str = "fp32") -> str:
    """Write the next version under `out` (default MODEL_DIR/export); returns its folder."""
    import tensorflow as tf
    if precision not in PRECISIONS:
        raise UsageError(f"--precision={precision}: use one of {', '.join(PRECISIONS)}")
    out = os.path.abspath(out or os.path.join(model_dir, "export"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out={out}: is a file; give a folder (TF Serving's model base path)")
    trained = trained_lib.load(model_dir)
    trained_at = trained.settings.get("precision", "fp32")
    model = trained.model if precision == trained_at else _at_precision(trained, precision)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out={out}: cannot create it ({e.strerror})") from e
    version = next_version(out)
    final = os.path.join(out, str(version))
    tmp = os.path.join(out, f".tmp-{version}-{os.getpid()}")
    try:
        # Traced and saved inside: saving traces the functions again (its own context).
        with frozen.inference(model, frozen.Folds()):
            module = _module(trained, model)
            tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve_bytes,
                                                         "pixels": module.serve_pixels})
        os.rename(tmp, final)
    except OSError as e:
        raise UsageError(f"--out={out}: cannot write the SavedModel ({e.strerror})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
