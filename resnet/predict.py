"""Top classes for image files, from a trained --model_dir (the command line: predict.py).

Images of any size are resized to 32x32 first: the model was trained on CIFAR-10's 32x32 images
and resizes to its own --image_size inside.
"""

import json
import os

from resnet.errors import UsageError


def predict(model_dir: str, paths, top: int = 3):
    """[(path, [(class, probability), ...]), ...] best first."""
    import numpy as np
    import tensorflow as tf

    from resnet.data.cifar import decode_image
    from resnet.training.results import CLASS_NAMES_FILE, MODEL_FILE

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
