"""Which examples each rank sees, in which order: pure numpy, the same answer on every rank.

Training: every epoch, one permutation of all N examples drawn from (seed, epoch), dealt out
round-robin, so the ranks' shards are disjoint and together hold every example exactly once.
Horovod's allreduce needs every rank to run the same number of steps, so each shard is padded to
steps * batch with repeats of its own examples that carry weight 0: they fill the batch but add
nothing to the loss or the metrics.

Evaluation uses the same dealing without shuffling; per-rank counts are summed, so the result is the
same for any number of ranks.
"""

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shard:
    indices: np.ndarray  # (steps * batch,) indices into the split, padding included
    weights: np.ndarray  # (steps * batch,) float32: 1 for a real example, 0 for padding

    @property
    def real(self) -> np.ndarray:
        return self.indices[self.weights > 0]


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int) -> int:
    """Steps every rank runs so that all examples are seen once per epoch."""
    return max(1, math.ceil(num_examples / (batch_size * world_size)))


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The global order of one epoch: reshuffled every epoch, reproducible from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _deal(order: np.ndarray, rank: int, world_size: int, batch_size: int) -> Shard:
    mine = order[rank::world_size]
    slots = steps_per_epoch(len(order), batch_size, world_size) * batch_size
    pad = slots - len(mine)
    # Pad with this shard's own examples (or example 0 when a tiny shard is empty), weight 0.
    filler = np.resize(mine if len(mine) else order[:1], pad)
    return Shard(indices=np.concatenate([mine, filler]).astype(np.int64),
                 weights=np.concatenate([np.ones(len(mine)), np.zeros(pad)]).astype(np.float32))


def train_shard(num_examples: int, seed: int, epoch: int, rank: int, world_size: int,
                batch_size: int, start: int = 0) -> Shard:
    """This rank's part of epoch `epoch`, from position `start` of the epoch's order on.

    Dealing is round-robin, so after s steps the ranks together have consumed exactly the first
    s * batch * world_size positions of the order. `start` is that count: elastic mode resumes an
    epoch with a different number of ranks by dealing only the rest of the same order.
    """
    return _deal(epoch_order(num_examples, seed, epoch)[start:], rank, world_size, batch_size)


def examples_done(num_examples: int, steps: int, batch_size: int, world_size: int,
                  start: int = 0) -> int:
    """Positions of the epoch's order consumed after `steps` more steps of `world_size` ranks
    from position `start` (see train_shard): elastic mode adds one step at a time, at the rank
    count of that step."""
    return min(num_examples, start + steps * batch_size * world_size)


def eval_shard(num_examples: int, rank: int, world_size: int, batch_size: int) -> Shard:
    return _deal(np.arange(num_examples), rank, world_size, batch_size)
