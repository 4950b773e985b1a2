"""Shards: disjoint, complete, equal steps on every rank, reshuffled each epoch."""

import numpy as np
import pytest

from resnet.data import sharding


@pytest.mark.parametrize("n, world, batch", [(100, 1, 8), (100, 2, 8), (101, 4, 8), (129, 2, 64),
                                             (7, 4, 3), (50000, 4, 64)])
def test_train_shards_disjoint_complete_equal(n, world, batch):
    shards = [sharding.train_shard(n, seed=3, epoch=1, rank=r, world_size=world,
                                   batch_size=batch) for r in range(world)]
    real = np.concatenate([s.real for s in shards])
    assert sorted(real.tolist()) == list(range(n))  # every example once, none twice
    steps = sharding.steps_per_epoch(n, batch, world)
    for s in shards:
        assert len(s.indices) == len(s.weights) == steps * batch  # same steps on every rank
        assert set(s.indices.tolist()) <= set(range(n))
    # Padding never reaches a real example's weight.
    assert sum(float(s.weights.sum()) for s in shards) == n


def test_reshuffled_each_epoch_and_reproducible():
    a = sharding.train_shard(1000, seed=0, epoch=0, rank=0, world_size=2, batch_size=10)
    b = sharding.train_shard(1000, seed=0, epoch=1, rank=0, world_size=2, batch_size=10)
    again = sharding.train_shard(1000, seed=0, epoch=1, rank=0, world_size=2, batch_size=10)
    other_seed = sharding.train_shard(1000, seed=1, epoch=1, rank=0, world_size=2, batch_size=10)
    assert not np.array_equal(a.indices, b.indices)
    assert set(a.real.tolist()) != set(b.real.tolist())  # shards change, not just their order
    np.testing.assert_array_equal(b.indices, again.indices)
    assert not np.array_equal(b.indices, other_seed.indices)


def test_eval_shards_cover_the_test_set_in_order():
    shards = [sharding.eval_shard(10, r, 3, 2) for r in range(3)]
    assert sorted(np.concatenate([s.real for s in shards]).tolist()) == list(range(10))
    assert shards[0].real.tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize("n,before,after,steps_before,batch", [
    (1000, 3, 2, 7, 16), (1001, 2, 3, 5, 8), (97, 4, 1, 1, 5), (500, 1, 4, 3, 32)])
def test_world_change_mid_epoch_sees_each_example_once(n, before, after, steps_before, batch):
    # Elastic mode: `before` ranks run some steps, then `after` ranks finish the same epoch.
    seen = []
    for rank in range(before):
        shard = sharding.train_shard(n, 3, 1, rank, before, batch)
        seen.append(shard.indices[:steps_before * batch][shard.weights[:steps_before * batch] > 0])
    done = sharding.examples_done(n, steps_before, batch, before)
    for rank in range(after):
        seen.append(sharding.train_shard(n, 3, 1, rank, after, batch, start=done).real)
    seen = np.concatenate(seen)
    assert len(seen) == n
    assert np.array_equal(np.sort(seen), np.arange(n))
