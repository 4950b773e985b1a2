"""The job's data: found (or downloaded once, by rank 0), read, and checked against the ranks."""

from absl import logging

from resnet.config import Config
from resnet.data import cifar, locate, pipeline
from resnet.errors import UsageError
from resnet.runtime import world as world_lib


def load(config: Config, world: world_lib.World):
    """(train, test) Splits. Every rank reads the data itself: it must be on every node."""
    if config.dataset == "synthetic":
        return pipeline.synthetic(config.max_train_examples or 50_000,
                                  config.max_test_examples or 10_000, seed=config.seed)
    if config.download:
        dest = config.data_dir or locate.default_download_dir()
        url = config.download_url or locate.OFFICIAL_URL
        # Rank 0 downloads once; the others wait and read the same file.
        path = world_lib.chief_decides(world, lambda: locate.download(dest, url))
    else:
        path = locate.find(config.data_dir)
    data = cifar.load(path, config.max_train_examples, config.max_test_examples)
    if len(data.train) < world.size:
        raise UsageError(f"{len(data.train)} training examples cannot be shared by {world.size} "
                         "ranks; raise --max_train_examples or use fewer ranks")
    logging.info("data: %s layout from %s: %d train, %d test images", data.layout, path,
                 len(data.train), len(data.test))
    return data.train, data.test
