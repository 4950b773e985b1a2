"""Run in a process with TensorFlow only (no resnet on the path, no TF_USE_LEGACY_KERAS: tf.keras
is Keras 3), as a serving stack would: load an export.py SavedModel with tf.saved_model.load and
score the test/ images of a class-folder archive through both signatures. Prints JSON.

  python tests/serving_check.py SAVED_MODEL ARCHIVE.tar.gz
"""

import io
import json
import sys
import tarfile

import numpy as np
import tensorflow as tf
from PIL import Image


def main(saved_model: str, archive: str) -> None:
    loaded = tf.saved_model.load(saved_model)
    names = [n.decode() for n in loaded.class_names.numpy()]
    side = int(loaded.input_size.numpy())
    members = []
    with tarfile.open(archive) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and "test" in parts[:-2]:
                members.append((names.index(parts[-2]), tar.extractfile(m).read()))
    confusion = np.zeros((len(names), len(names)), np.int64)
    diff = 0.0
    for start in range(0, len(members), 32):
        chunk = members[start:start + 32]
        by_bytes = loaded.signatures["serving_default"](
            image_bytes=tf.constant([data for _, data in chunk]))
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(d)).convert("RGB").resize((side, side)))
                           for _, d in chunk])
        by_pixels = loaded.signatures["pixels"](images=tf.constant(pixels, tf.uint8))
        diff = max(diff, float(np.abs(by_bytes["probabilities"].numpy() -
                                      by_pixels["probabilities"].numpy()).max()))
        for (label, _), index, name in zip(chunk, by_bytes["class_index"].numpy(),
                                           by_bytes["class_name"].numpy()):
            assert names[index] == name.decode()
            confusion[label, index] += 1
    # The op types of the signature's graph and every function it calls.
    graph = loaded.signatures["pixels"].graph.as_graph_def()
    ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
    print(json.dumps({"signatures": sorted(loaded.signatures), "confusion_matrix":
                      confusion.tolist(), "pixels_against_bytes": diff, "classes": names,
                      "keras": tf.keras.__name__, "resnet_loaded": "resnet" in sys.modules,
                      "tf_keras_loaded": "tf_keras" in sys.modules,
                      "batchnorm_ops": sum(op.startswith("FusedBatchNorm") for op in ops),
                      "conv_ops": sum(op == "Conv2D" for op in ops)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
