"""Memory or streaming: the one choice, made from the data set alone, so every rank makes the
same one, and the decoding of a whole split into memory when that is the choice.

In memory, every rank holds the whole decoded set (it reads its shard of it each epoch): fast,
and bounded by the node's memory. Streamed, a rank holds paths and labels and decodes only its
shard, in tf.data's parallel maps, as training goes: memory stays flat however large the set.
"""

import concurrent.futures
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from resnet.data import images
from resnet.data.splits import SMALL_IMAGE, Split
from resnet.errors import UsageError

MEMORY_SHARE = 0.25  # auto: in memory if one rank's decoded copy needs at most this of its RAM


def memory_total() -> int:
    """The node's RAM in bytes (MemTotal, not what happens to be free: every rank of every node
    must reach the same answer)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose(requested: str, sizes: Sequence[Optional[Tuple[int, int]]], ranks_per_node: int,
           can_stream: bool) -> Tuple[str, str]:
    """('memory' or 'stream', why) for images of these (width, height) sizes (None: not known
    without decoding). `can_stream`: the files are on disk (not inside an archive)."""
    known = [s for s in sizes if s is not None]
    uniform = len(known) == len(sizes) and len(set(known)) == 1
    need = sum(w * h * 3 for w, h in known) if uniform else None
    budget = int(memory_total() / max(ranks_per_node, 1) * MEMORY_SHARE)
    if requested == "memory":
        if not (uniform):
            raise UsageError("--data_loading=memory needs images all of one size (these differ, "
                             "or their size is not in their header); use --data_loading=stream, "
                             "or resize them")
        return "memory", "--data_loading=memory"
    if requested == "stream":
        if not can_stream:
            raise UsageError("--data_loading=stream needs the images as files on disk; extract "
                             "the archive and point --data_dir at the folder")
        return "stream", "--data_loading=stream"
    if not can_stream:
        if uniform:
            return "memory", "an archive cannot be streamed (gzip cannot seek)"
        raise UsageError("the images in this archive differ in size, so they cannot be held in "
                         "memory, and an archive cannot be streamed: extract it and point "
                         "--data_dir at the folder")
    if not uniform:
        return "stream", "the images differ in size (or their size is not in their header)"
    if need > budget:
        return "stream", (f"decoded they need {need / 2**30:.1f} GiB per rank, more than "
                          f"{MEMORY_SHARE:.0%} of this node's RAM shared by {ranks_per_node} "
                          f"rank(s) ({budget / 2**30:.1f} GiB)")
    return "memory", (f"decoded they need {need / 2**20:.0f} MiB per rank, within "
                      f"{MEMORY_SHARE:.0%} of this node's RAM per rank")


def decode_all(read: Sequence[Callable[[], bytes]], where: Sequence[str], labels: np.ndarray,
               threads: int = 0) -> Split:
    """Decode every image (all of one size) into one uint8 array. Pillow releases the GIL while
    it decodes, so threads help large images; a small one (CIFAR's 32 px) decodes in less time
    than a thread hand-off takes: 10,000 of them took 3.2 s in 2 threads, 1.7 s in a loop."""
    first = images.decode(read[0](), where[0]) if len(read) else None
    if not threads:
        small = first is None or max(first.shape[:2]) <= SMALL_IMAGE
        threads = 1 if small else min(8, os.cpu_count() or 1)
    out = np.empty((len(read),) + (first.shape if first is not None else (0, 0, 3)), np.uint8)

    def checked(i):
        image = images.decode(read[i](), where[i])
        if image.shape != out.shape[1:]:
            raise UsageError(f"{where[i]}: image is {image.shape[1]}x{image.shape[0]}, the "
                             f"others are {out.shape[2]}x{out.shape[1]}; resize or remove it, or "
                             "use --data_loading=stream")
        out[i] = image

    if threads == 1:
        for i in range(1, len(read)):
            checked(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(checked, range(1, len(read))))
    if first is not None:
        out[0] = first
    return Split(out, labels.astype(np.int32))

