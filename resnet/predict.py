"""Top classes for image files, from a trained --model_dir (the command line: predict.py).

Each image is prepared as the test images were: a model trained on small images (CIFAR's, 32x32
input) gets the image resized to its input size and resizes it on itself; a model trained on
larger images gets the centre crop at its input size (resnet.data.images.centre_crop).
"""

import json
import os

from resnet.data.splits import SMALL_IMAGE
from resnet.errors import UsageError


def predict(model_dir: str, paths, top: int = 3):
    """[(path, [(class, probability), ...]), ...] best first."""
    import numpy as np
    import tensorflow as tf

    from resnet.data import images as images_lib
    from resnet.training.results import CLASS_NAMES_FILE, MODEL_FILE

    model_path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UsageError(f"--model_dir={model_dir}: no {MODEL_FILE}; train first (the model is "
                         "saved when training finishes)")
    with open(os.path.join(model_dir, CLASS_NAMES_FILE)) as f:
        class_names = json.load(f)
    model = tf.keras.models.load_model(model_path)
    side = int(model.input_shape[1])
    images = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UsageError(f"{path}: cannot read ({e.strerror})") from e
        image = images_lib.decode(data, path)
        if side <= SMALL_IMAGE:
            images.append(tf.image.resize(image, (side, side), antialias=True).numpy())
        else:
            images.append(images_lib.centre_crop(image, side).numpy())
    probs = model.predict(np.stack(images), verbose=0)
    results = []
    for path, p in zip(paths, probs):
        best = np.argsort(p)[::-1][:top]
        results.append((path, [(class_names[i], float(p[i])) for i in best]))
    return results
