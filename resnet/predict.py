"""Top classes for image files, from a trained --model_dir.

  python -m resnet.predict --model_dir=/tmp/resnet_cifar10 cat.png ship.jpg

Images of any size are resized to 32x32 first: the model was trained on CIFAR-10's 32x32 images
and resizes to its own --image_size inside.
"""

import json
import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as train_dist.py: before TensorFlow loads

from absl import app, flags

from resnet.errors import EXIT_USAGE, UsageError

flags.DEFINE_string("model_dir", None, "The --model_dir of a finished training run.")
flags.DEFINE_integer("top", 3, "How many classes to print per image.")
FLAGS = flags.FLAGS


def predict(model_dir: str, paths, top: int = 3):
    """[(path, [(class, probability), ...]), ...] best first."""
    import numpy as np
    import tensorflow as tf

    from resnet.cifar import decode_image
    from resnet.train import CLASS_NAMES_FILE, MODEL_FILE

    model_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UsageError(f"--model_dir={model_dir}: no {MODEL_FILE}; train first (the model is "
                         "saved when training finishes)")
    with open(os.path.join(model_dir, CLASS_NAMES_FILE)) as f:
        class_names = json.load(f)
    images = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UsageError(f"{path}: cannot read ({e.strerror})") from e
        image = decode_image(data, path, size=None)
        images.append(tf.image.resize(image, (32, 32), antialias=True).numpy())
    model = tf.keras.models.load_model(model_path)
    probs = model.predict(np.stack(images), verbose=0)
    results = []
    for path, p in zip(paths, probs):
        best = np.argsort(p)[::-1][:top]
        results.append((path, [(class_names[i], float(p[i])) for i in best]))
    return results


def main(argv):
    paths = argv[1:]
    if not FLAGS.model_dir or not paths:
        raise app.UsageError("usage: python -m resnet.predict --model_dir=DIR IMAGE [IMAGE...]")
    try:
        for path, best in predict(FLAGS.model_dir, paths, FLAGS.top):
            print(path + ": " + ", ".join(f"{name} {p:.3f}" for name, p in best))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    app.run(main)
