"""The job's data: found (or downloaded once, by rank 0), its layout detected, read or indexed,
and checked against the ranks.

Layouts, detected from --data_dir (a folder, or a .tar.gz of it):
  CIFAR-10 / CIFAR-100   the official Python or binary batches                  cifar.py
  class-folder tree      train/<class>/*.jpg|png, and test/ or val/ (optional)  folders.py
  TFRecords              train-*-of-*, validation-*-of-*, labels.txt            tfrecords.py
"""

import os

from absl import logging

from resnet.config import Config
from resnet.data import cifar, folders, locate, pipeline, tfrecords
from resnet.data.splits import DataSet
from resnet.data.tree import open_tree
from resnet.errors import UsageError
from resnet.runtime import world as world_lib


def load(config: Config, world: world_lib.World) -> DataSet:
    """Every rank reads (or indexes) the data itself: it must be on every node."""
    if config.dataset == "synthetic":
        train, test = pipeline.synthetic(config.max_train_examples or 50_000,
                                         config.max_test_examples or 10_000, seed=config.seed)
        return DataSet(train, test, cifar.CLASS_NAMES, "synthetic", "random images")
    wanted = "cifar100" if config.dataset == "cifar100" else "cifar10"
    if config.download:
        # Rank 0 downloads once; the others wait and read the same file.
        path = world_lib.chief_decides(world, lambda: locate.fetch(
            wanted, config.data_dir, config.download_url))
    else:
        path = locate.find(config.data_dir, wanted)
    data = open_data(path, config, world.local_size)
    _check(data, config, world)
    logging.info("data: %s from %s: %d train, %d test images, %d classes; %s (%s)", data.layout,
                 path, len(data.train), len(data.test), len(data.class_names),
                 "in memory" if data.loading == "memory" else "streamed from its files",
                 data.why)
    return data


def open_data(path: str, config: Config, ranks_per_node: int = 1) -> DataSet:
    """The data set at `path`, in whichever layout it is."""
    limits = dict(max_train=config.max_train_examples, max_test=config.max_test_examples)
    if os.path.isdir(path) and tfrecords.detect(os.listdir(path)) == "":
        return tfrecords.load(path, **limits)  # no need to walk the folder
    tree = open_tree(path)
    found = cifar.detect(tree)
    if found:
        return cifar.load_layout(tree, *found, label_mode=config.label_mode, **limits)
    prefix = folders.detect(tree)
    if prefix is not None:
        return folders.load(tree, prefix, config.validation_fraction, config.data_loading,
                            ranks_per_node, config.skip_bad_images, **limits)
    prefix = tfrecords.detect(tree.names())
    if prefix is not None:
        if not tree.is_folder:
            raise UsageError(f"{path}: TFRecords inside an archive cannot be read record by "
                             "record; extract it and point --data_dir at the folder")
        return tfrecords.load(os.path.join(path, prefix), **limits)
    raise UsageError(
        f"{path}: no data set found. Expected one of: CIFAR's official folders "
        "(cifar-10-batches-py/, cifar-10-batches-bin/, cifar-100-python/, cifar-100-binary/), "
        "a class-folder tree (train/<class>/*.jpg|png, and test/<class>/ or val/<class>/), "
        "TFRecords (train-*-of-*, validation-*-of-*), or a .tar.gz of one. Point --data_dir at "
        "it, or use --download for CIFAR")


def _check(data: DataSet, config: Config, world: world_lib.World) -> None:
    named = {"cifar10": "cifar10-", "cifar100": "cifar100-"}.get(config.dataset)
    if named and not data.layout.startswith(named):
        raise UsageError(f"--dataset={config.dataset}, but {data.source} holds a {data.layout} "
                         "data set; leave --dataset at auto to take what is there")
    if config.label_mode != "fine" and not data.layout.startswith("cifar100-"):
        raise UsageError(f"--label_mode={config.label_mode} is for CIFAR-100 (its 20 "
                         f"superclasses); {data.source} is {data.layout}")
    if config.data_loading == "stream" and data.layout.startswith("cifar"):
        raise UsageError("--data_loading=stream: CIFAR's batch files hold all images in a few "
                         "files and are always read into memory (180 MB); leave it at auto")
    if config.data_loading == "memory" and data.layout == "tfrecords":
        raise UsageError("--data_loading=memory: TFRecords are always streamed; leave it at "
                         "auto (or convert to a class-folder tree)")
    if len(data.train) < world.size:
        raise UsageError(f"{len(data.train)} training examples cannot be shared by {world.size} "
                         "ranks; raise --max_train_examples or use fewer ranks")
    if data.input_size(config.image_size) != 32 and config.start_image_size:
        raise UsageError("--start_image_size needs 32 px images held in memory (CIFAR), which "
                         "the model resizes; these images are cropped to --image_size as they "
                         "are read: leave --start_image_size out")
