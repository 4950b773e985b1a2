"""Batch inference: every image under the given PATHs through the model, in batches, streamed.

Memory is bounded by the batches in flight, not by the number of images: the input list holds
names and positions only (an archive excepted: it is in memory, as for training), tf.data reads
and decodes a few batches ahead, and the rows go to the output as they are scored.

On several ranks (horovodrun -np N python predict.py ...) each rank scores every N-th image,
and rank 0 writes all the rows in input order: after each round of batches the ranks' rows are
gathered (as JSON, nothing unpickled) and rank 0 emits every row no rank can still precede.

Bad input is refused before anything is written: an output that cannot be written, no images,
an undecodable image (unless --skip_bad_images: then it is left out and counted). A file is
written under a temporary name and renamed when complete.
"""

import csv
import heapq
import io
import json
import math
import os
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np

from resnet.errors import UsageError
from resnet.runtime import world as world_lib
from resnet.serving import inputs as inputs_lib
from resnet.serving.scorer import Scorer

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
ALONE = world_lib.World(0, 1, 0, 1, "", 0, 0)  # no launcher: a world of one, Horovod not started


class Output:
    """Rows to a file (atomically) or to stdout, as CSV or JSON lines."""

    def __init__(self, path: Optional[str], top: int, fmt: Optional[str] = None):
        self.path, self.top = path, top
        if path and os.path.isdir(path):
            raise UsageError(f"--out={path}: is a folder; name a file in it")
        ext = os.path.splitext(path)[1].lower() if path else ".csv"
        self.format = fmt or FORMATS.get(ext)
        if self.format is None:
            raise UsageError(f"--out={path}: name a .csv or .jsonl file (or leave --out out for "
                             "CSV on standard output)")
        self._tmp, self._file = None, sys.stdout
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            try:
                fd, self._tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            except OSError as e:
                raise UsageError(f"--out={path}: cannot write in {folder} ({e.strerror}); give "
                                 "a path in a folder that exists and you can write") from e
            self._file = os.fdopen(fd, "w", newline="")
        if self.format == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(["path"] + [f"{what}_{k}" for k in range(1, top + 1)
                                          for what in ("class", "probability")])

    def row(self, name: str, classes: Sequence[str], probs: Sequence[float]) -> None:
        if self.format == "csv":
            self._csv.writerow([name] + [x for pair in zip(classes, probs)
                                         for x in (pair[0], f"{pair[1]:.6f}")])
        else:
            self._file.write(json.dumps({"path": name, "classes": list(classes),
                                         "probabilities": [round(p, 6) for p in probs]}) + "\n")

    def close(self, ok: bool) -> None:
        if self._tmp is None:
            self._file.flush()
            return
        self._file.close()
        if ok:
            os.replace(self._tmp, self.path)
        else:
            os.remove(self._tmp)


class Progress:
    """images done, images/s, time left: on a terminal only, rewritten in place."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.done = total, stream, 0
        self.started = time.perf_counter()
        self.shown = stream.isatty() if hasattr(stream, "isatty") else False

    def add(self, n: int) -> None:
        self.done += n
        if self.shown:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate else 0
            self.stream.write(f"\r{self.done}/{self.total} images, {rate:.1f} images/s, "
                              f"{left:.0f} s left ")
            self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")


def _bad(inputs: inputs_lib.Inputs, mine: List[int], world) -> List[list]:
    """[position, problem] of every bad image of every rank, checked by the rank that owns it."""
    found = [[i, p] for i in mine if (p := inputs.problem(i))]
    return sorted(row for rows in world_lib.allgather_json(world, found) for row in rows)


def checked_inputs(paths: Sequence[str], skip_bad: bool, world) -> tuple:
    """(inputs, positions left out): every image under `paths`, each rank checking its own
    share; a bad one refuses the run on every rank unless `skip_bad`."""
    inputs = inputs_lib.gather(list(paths))
    bad = _bad(inputs, list(range(world.rank, len(inputs), world.size)), world)
    if bad and not skip_bad:
        i, problem = bad[0]
        raise UsageError(f"{inputs.names[i]}: {problem}" + (f" (and {len(bad) - 1} more)" if
                         len(bad) > 1 else "") + "; remove it, or pass --skip_bad_images to "
                         "leave such files out (they are counted)")
    return inputs, {i for i, _ in bad}


def run(scorer: Scorer, inputs: inputs_lib.Inputs, skipped: set, output: Output,
        batch_size: int = 64, world: Optional[world_lib.World] = None) -> dict:
    """Score `inputs` but the `skipped` positions into `output` (rank 0's); returns the
    counts and the speed."""
    import tensorflow as tf
    from resnet.data import pipeline
    world = world or ALONE
    if output.top > len(scorer.class_names):
        raise UsageError(f"--top={output.top}: the model knows {len(scorer.class_names)} "
                         "classes")
    kept = [[i for i in range(r, len(inputs), world.size) if i not in skipped]
            for r in range(world.size)]
    mine = kept[world.rank]
    rounds = max(math.ceil(len(k) / batch_size) for k in kept)
    ds = inputs_lib.encoded(inputs.take(mine)).map(
        scorer.prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = iter(pipeline.without_autotune_model(ds.batch(batch_size).prefetch(2)))
    names, top = scorer.class_names, output.top
    progress = Progress(len(inputs) - len(skipped)) if world.is_chief else None
    pending: list = []  # rank 0: (position, classes, probabilities) not yet written
    started, at = time.perf_counter(), 0
    for b in range(rounds):
        rows = []
        batch = next(batches, None)
        if batch is not None:
            probs = scorer(batch)
            for position, p in zip(mine[at:at + len(probs)], probs):
                best = np.argsort(-p, kind="stable")[:top]
                rows.append([position, [names[k] for k in best], [float(p[k]) for k in best]])
            at += len(probs)
        gathered = world_lib.allgather_json(world, rows)
        if not world.is_chief:
            continue
        for part in gathered:
            for row in part:
                heapq.heappush(pending, tuple(row[:1]) + (row[1], row[2]))
        # No rank can still send a position below the next one each rank has to score.
        floor = min((k[(b + 1) * batch_size] for k in kept if len(k) > (b + 1) * batch_size),
                    default=len(inputs))
        while pending and pending[0][0] < floor:
            position, classes, probs = heapq.heappop(pending)
            output.row(inputs.names[position], classes, probs)
        progress.add(sum(len(part) for part in gathered))
    seconds = time.perf_counter() - started
    if progress:
        progress.end()
    scored = sum(len(k) for k in kept)
    return {"images": scored, "skipped": len(skipped), "seconds": seconds,
            "images_per_second": scored / max(seconds, 1e-9), "ranks": world.size,
            "skipped_files": [inputs.names[i] for i in sorted(skipped)][:20]}


def predict(model_dir: str, paths: Sequence[str], out: Optional[str] = None, top: int = 3,
            batch_size: int = 64, skip_bad: bool = False, world=None) -> dict:
    """The whole command: open the model and the output, score, close the output (renamed into
    place only when every row is in it)."""
    from resnet.serving.scorer import find, open_scorer
    world = world or ALONE
    if top < 1 or batch_size < 1:
        raise UsageError(f"--top={top} --batch_size={batch_size}: both must be at least 1")
    find(model_dir)  # a model_dir with no model is refused before anything else
    # Rank 0 alone writes; the others score into nothing. Its refusal of the output path stops
    # every rank (chief_decides), before anything is scored.
    output, refused = _Discard(top), None
    if world.is_chief:
        try:
            output = Output(out, top)
        except UsageError as e:
            refused = e

    def decide():
        if refused:
            raise refused
    world_lib.chief_decides(world, decide)
    ok = False
    try:
        inputs, skipped = checked_inputs(paths, skip_bad, world)  # before the model loads
        stats = run(open_scorer(model_dir), inputs, skipped, output, batch_size, world)
        ok = True
        return stats
    finally:
        output.close(ok)


class _Discard(Output):
    """A rank other than 0: rows are rank 0's to write."""

    def __init__(self, top: int):
        self.path, self.top, self.format, self._tmp, self._file = None, top, "csv", None, \
            io.StringIO()

    def row(self, *args) -> None:
        pass
