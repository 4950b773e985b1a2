"""Any class-folder tree: train/<class>/*.jpg|png, and test/<class>/ (or val/, validation/).

Class names are the folder names, in sorted order (label i is the i-th name). Without a test
split, a fixed share of each class (--validation_fraction) is held out with a fixed seed: the
same images whatever the number of ranks or --seed. Every file is checked before training starts
(images.check_file: its header and its end, not its pixels); a bad one is refused by name, or
left out and counted with --skip_bad_images.
"""

import concurrent.futures
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from resnet.data import images, loading
from resnet.data.splits import DataSet, StreamSplit, subset_indices
from resnet.data.tree import Tree
from resnet.errors import UsageError

TEST_NAMES = ("test", "val", "validation")
VALIDATION_SEED = 20240602  # fixed: the held-out images do not move with --seed or the ranks


def detect(tree: Tree) -> Optional[str]:
    """The prefix of the folder holding train/<class>/<image>, or None."""
    for rel in tree.names():
        parts = rel.split("/")
        for i, part in enumerate(parts[:-2]):
            if part == "train" and len(parts) - i == 3 and images.is_image_name(rel):
                return "/".join(parts[:i]) + ("/" if i else "")
    return None


def _classes(tree: Tree, root: str) -> Dict[str, List[str]]:
    """class name -> its files' paths under root (e.g. 'train/'), refusing what does not fit."""
    by_class: Dict[str, List[str]] = {d[len(root):]: [] for d in tree.dirs
                                       if d.startswith(root) and "/" not in d[len(root):]}
    for rel in tree.names():
        if not rel.startswith(root):
            continue
        parts = rel[len(root):].split("/")
        if len(parts) == 1:
            raise UsageError(f"{tree.where(rel)}: a file directly in {root}; images go in one "
                             f"folder per class ({root}<class>/); move or remove it")
        if len(parts) > 2:
            continue  # deeper folders are not classes; their files are left alone
        if not images.is_image_name(rel):
            raise UsageError(f"{tree.where(rel)}: not an image file (expected .png, .jpg or "
                             ".jpeg); remove it from the data folder")
        by_class[parts[0]].append(rel)
    empty = sorted(c for c, files in by_class.items() if not files)
    if empty:
        raise UsageError(f"{tree.where(root + empty[0])}: a class folder with no images (.png, "
                         f".jpg, .jpeg){f'; also {len(empty) - 1} more' if len(empty) > 1 else ''}"
                         "; add images or remove the folder")
    return by_class


def _same_classes(tree: Tree, train: Dict, test: Dict, test_root: str) -> None:
    if len(train) < 2:
        raise UsageError(f"{tree.where('train')}: {len(train)} class folder(s) "
                         f"({', '.join(train) or 'none'}); a classifier needs at least 2")
    missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if missing or extra:
        say = []
        if missing:
            say.append(f"missing class folder(s) {', '.join(missing)}")
        if extra:
            say.append(f"unexpected class folder(s) {', '.join(extra)}")
        raise UsageError(f"{tree.where(test_root)}: {'; '.join(say)}: the test split must have "
                         "the same classes as train/")


def _held_out(by_class: Dict[str, List[str]], fraction: float):
    """(train, test) dicts: round(fraction x n) of each class held out, chosen with a fixed seed
    from the sorted file list (at least one per class that has two images or more)."""
    rng = np.random.RandomState(VALIDATION_SEED)
    train, test = {}, {}
    for name in sorted(by_class):
        files = sorted(by_class[name])
        k = min(max(int(round(fraction * len(files))), 1 if len(files) > 1 else 0),
                len(files) - 1)
        chosen = set(rng.permutation(len(files))[:k].tolist())
        test[name] = [f for i, f in enumerate(files) if i in chosen]
        train[name] = [f for i, f in enumerate(files) if i not in chosen]
    return train, test


def flatten(by_class: Dict[str, List[str]], names: Sequence[str]):
    files = [f for n in names for f in sorted(by_class[n])]
    labels = np.asarray([i for i, n in enumerate(names) for _ in by_class[n]], np.int32)
    return files, labels


def _check(tree: Tree, files: List[str], skip_bad: bool):
    """(kept indices, sizes): every file's header and end checked; files on disk in parallel
    threads (they wait on I/O), an archive's in-memory bytes in a loop (the check is pure
    Python: threads took several times as long on CIFAR's 1-2 KB files, BENCHMARKS.md)."""
    if tree.is_folder:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda rel: images.check_file(tree.path(rel)), files))
    else:
        results = [images.check_data(tree.read(rel)) for rel in files]
    bad = [(rel, problem) for rel, (_, problem) in zip(files, results) if problem]
    if bad and not skip_bad:
        rel, problem = bad[0]
        more = f" ({len(bad) - 1} more bad file(s) after it)" if len(bad) > 1 else ""
        raise UsageError(f"{tree.where(rel)}: {problem}{more}; replace or remove it, or pass "
                         "--skip_bad_images to leave bad files out")
    if bad:
        logging.warning("--skip_bad_images: left out %d bad image file(s), e.g. %s: %s", len(bad),
                        tree.where(bad[0][0]), bad[0][1])
    keep = [i for i, (_, problem) in enumerate(results) if not problem]
    return np.asarray(keep, np.int64), [results[i][0] for i in keep]


def split_classes(tree: Tree, prefix: str, validation_fraction: float):
    """(train, test, how the test split was found): class name -> files, for each split."""
    train_by = _classes(tree, prefix + "train/")
    test_root = next((prefix + n + "/" for n in TEST_NAMES if prefix + n in tree.dirs), None)
    if test_root is None:
        if not 0 < validation_fraction < 1:
            raise UsageError(f"{tree.where(prefix + 'train')}: no test/ or val/ folder beside "
                             "it, and --validation_fraction is 0: give a fraction such as 0.1 "
                             "to hold out, or add a test/ folder")
        train_by, test_by = _held_out(train_by, validation_fraction)
        held = f"held out {validation_fraction:.0%} of train/ (fixed seed)"
    else:
        test_by = _classes(tree, test_root)
        held = test_root.rstrip("/")
    _same_classes(tree, train_by, test_by, test_root or prefix + "train")
    return train_by, test_by, held


def load(tree: Tree, prefix: str, validation_fraction: float, loading_mode: str,
         ranks_per_node: int, skip_bad: bool, max_train: Optional[int] = None,
         max_test: Optional[int] = None) -> DataSet:
    train_by, test_by, held = split_classes(tree, prefix, validation_fraction)
    names = tuple(sorted(train_by))
    splits, sizes = [], []
    for by, limit in ((train_by, max_train), (test_by, max_test)):
        files, labels = flatten(by, names)
        keep = subset_indices(len(files), limit)  # before the check: only these are read
        files, labels = [files[i] for i in keep], labels[keep]
        kept, found = _check(tree, files, skip_bad)
        splits.append(([files[i] for i in kept], labels[kept]))
        sizes += found
    for (files, _), split in zip(splits, ("train", "test")):
        if not files:
            raise UsageError(f"{tree.source}: no {split} images left; check the folders")
    mode, why = loading.choose(loading_mode, sizes, ranks_per_node, can_stream=tree.is_folder)
    if mode == "memory":
        made = [loading.decode_all([lambda r=r: tree.read(r) for r in files],
                                   [tree.where(r) for r in files], labels)
                for files, labels in splits]
    else:
        made = [StreamSplit(np.asarray([tree.path(r) for r in files], dtype=object), labels)
                for files, labels in splits]
    return DataSet(train=made[0], test=made[1], class_names=names, layout="folders",
                   source=tree.source, loading=mode, why=f"{why}; test: {held}")
