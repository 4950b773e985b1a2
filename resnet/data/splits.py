"""What a loaded data set is: its splits (held in memory, or files read as training goes), its
class names, and where and how it was found.

Two kinds of split, one interface (len, labels, subset):
  Split        decoded uint8 images in memory (CIFAR; a class-folder tree that fits)
  StreamSplit  one entry per image: a file, or a byte range of a TFRecord file, decoded by tf.data
               as training goes, so a rank holds only paths and labels, never the images
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

SUBSET_SEED = 20240601  # fixed: --max_*_examples picks the same images whatever --seed is


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8, RGB
    labels: np.ndarray  # (N,) int32 in [0, classes)

    def __len__(self):
        return len(self.labels)

    def take(self, keep: np.ndarray) -> "Split":
        return Split(self.images[keep], self.labels[keep])


@dataclasses.dataclass(frozen=True)
class StreamSplit:
    paths: np.ndarray  # (N,) str: the file holding each image
    labels: np.ndarray  # (N,) int32
    # TFRecords: where each record's serialized tf.train.Example starts and how long it is;
    # None for image files (the whole file is the image).
    offsets: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.labels)

    @property
    def records(self) -> bool:
        return self.offsets is not None

    def take(self, keep: np.ndarray) -> "StreamSplit":
        return StreamSplit(self.paths[keep], self.labels[keep],
                           None if self.offsets is None else self.offsets[keep],
                           None if self.lengths is None else self.lengths[keep])


def subset_indices(n: int, limit: Optional[int]) -> np.ndarray:
    """The sorted indices of a fixed subset of `limit` of n examples (the same for every rank
    and every --seed); all n when limit is None or not below n."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.RandomState(SUBSET_SEED).permutation(n)[:limit])


def subset(split, limit: Optional[int]):
    """A split's fixed subset of `limit` examples (subset_indices)."""
    if limit is None or limit >= len(split):
        return split
    return split.take(subset_indices(len(split), limit))


@dataclasses.dataclass(frozen=True)
class DataSet:
    train: object  # Split or StreamSplit
    test: object
    class_names: Tuple[str, ...]
    layout: str  # e.g. 'cifar10-python', 'folders', 'tfrecords'
    source: str
    # How it is read, and why (the log says both): 'memory' or 'stream'.
    loading: str = "memory"
    why: str = ""

    def input_size(self, image_size: int) -> int:
        """The side of the images the pipeline hands the model. Small images in memory go in as
        they are and the model resizes them (the CIFAR path); everything else the pipeline crops
        and resizes to image_size itself."""
        if isinstance(self.train, Split) and self.train.images.shape[1] <= SMALL_IMAGE:
            return int(self.train.images.shape[1])
        return image_size


# Up to this side, images are "small" (CIFAR-like): padded-and-cropped at their own size, and
# resized by the model. Larger ones get a random resized crop to --image_size in the pipeline.
SMALL_IMAGE = 64
