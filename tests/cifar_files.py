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


# --- CIFAR-100 ---------------------------------------------------------------------------------

C100_FINE = tuple(f"fine{i:02d}" for i in range(100))
C100_COARSE = tuple(f"coarse{i:02d}" for i in range(20))


def make_split100(n: int, seed: int):
    """n images with fine labels 0..99 and coarse labels fine // 5 (a fixed map, as the real
    set has one), and the fine label written into the image's first pixel."""
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, n).astype(np.int32)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = fine
    return images, fine, fine // 5


def write_python100(root, train, test, folder="cifar-100-python"):
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)
    for name, (images, fine, coarse) in (("train", train), ("test", test)):
        batch = {b"filenames": [b"%d.png" % i for i in range(len(fine))],
                 b"batch_label": name.encode(), b"fine_labels": [int(x) for x in fine],
                 b"coarse_labels": [int(x) for x in coarse], b"data": _planar(images)}
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(os.path.join(out, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": [n.encode() for n in C100_FINE],
                     b"coarse_label_names": [n.encode() for n in C100_COARSE]}, f, protocol=2)
    return out


def write_binary100(root, train, test, folder="cifar-100-binary"):
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)
    for name, (images, fine, coarse) in (("train.bin", train), ("test.bin", test)):
        rows = np.concatenate([coarse.astype(np.uint8)[:, None], fine.astype(np.uint8)[:, None],
                               _planar(images)], axis=1)
        with open(os.path.join(out, name), "wb") as f:
            f.write(rows.tobytes())
    for name, names in (("fine_label_names.txt", C100_FINE),
                        ("coarse_label_names.txt", C100_COARSE)):
        with open(os.path.join(out, name), "w") as f:
            f.write("\n".join(names) + "\n")
    return out


# --- Class-folder trees of any size --------------------------------------------------------------

def colour(i: int):
    """A distinct solid colour per image index: it survives any crop, resize and flip, so a
    pipeline's output can be traced back to the file it came from."""
    return (i % 251, (i // 251) % 251, 60 + i % 7)


def index_of(pixel) -> int:
    r, g = int(round(float(pixel[0]))), int(round(float(pixel[1])))
    return r + 251 * g


def write_tree(root, classes, per_class, size=(48, 40), test_per_class=None, ext="png",
               sizes=None):
    """train/<class>/ (and test/<class>/ when test_per_class) of solid-colour images; image k
    of the tree (in train-then-test, class, file order) has colour(k). Returns {path: k}."""
    index, k = {}, 0
    for split, n in (("train", per_class), ("test", test_per_class)):
        if not n:
            continue
        for name in classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for j in range(n):
                w, h = sizes[k % len(sizes)] if sizes else size
                path = os.path.join(root, split, name, f"{j:04d}.{ext}")
                Image.new("RGB", (w, h), colour(k)).save(path)
                index[path] = k
                k += 1
    return index
