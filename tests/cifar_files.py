"""Small CIFAR-10 files in the official formats, written by the tests themselves.

The Python batches are pickled exactly as the official ones are laid out (a dict with bytes keys,
channel-planar uint8 rows, protocol 2); the binary batches are 3073-byte records; the image folders
are train/<class>/*.png|jpg as in ../shared/data/cifar-10-images.tar.gz.
"""

import os
import pickle
import tarfile

import numpy as np
from PIL import Image

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")


def make_split(per_class: int, seed: int):
    """Images whose class is visible (a bright stripe at a class-specific row), labels balanced."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class).astype(np.int32)
    rng.shuffle(labels)
    images = rng.integers(0, 80, (len(labels), 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 3 * label:3 * label + 3, :, :] = 250
    return images, labels


def _planar(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_python(root, train, test, folder="cifar-10-batches-py"):
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)
    parts = np.array_split(np.arange(len(train[1])), 5)
    for i, idx in enumerate(parts, 1):
        _pickle(os.path.join(out, f"data_batch_{i}"), train[0][idx], train[1][idx],
                f"training batch {i} of 5")
    _pickle(os.path.join(out, "test_batch"), test[0], test[1], "testing batch 1 of 1")
    with open(os.path.join(out, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CLASS_NAMES],
                     b"num_cases_per_batch": len(parts[0]), b"num_vis": 3072}, f, protocol=2)
    return out


def _pickle(path, images, labels, name):
    batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in labels],
             b"data": _planar(images), b"filenames": [b"%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_binary(root, train, test, folder="cifar-10-batches-bin"):
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)
    parts = np.array_split(np.arange(len(train[1])), 5)
    for i, idx in enumerate(parts, 1):
        _records(os.path.join(out, f"data_batch_{i}.bin"), train[0][idx], train[1][idx])
    _records(os.path.join(out, "test_batch.bin"), test[0], test[1])
    with open(os.path.join(out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    return out


def _records(path, images, labels):
    rows = np.concatenate([labels.astype(np.uint8)[:, None], _planar(images)], axis=1)
    with open(path, "wb") as f:
        f.write(rows.tobytes())


def write_image_folder(root, train, test, ext="png"):
    for split, (images, labels) in (("train", train), ("test", test)):
        for name in CLASS_NAMES:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(os.path.join(root, split, CLASS_NAMES[label],
                                                     f"{i:04d}.{ext}"))
    return root


def make_tar(src, tar_path, arcname):
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return tar_path
