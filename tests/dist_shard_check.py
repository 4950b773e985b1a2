"""Run under horovodrun: every rank computes its shard, rank 0 gathers them and writes JSON.

The test then checks, for shards made by real ranks with their real rank and size, that they are
disjoint, complete and reshuffled.
"""

import json
import sys

import horovod.tensorflow as hvd

from resnet.data import sharding

hvd.init()
n, batch, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mine = {epoch: sharding.train_shard(n, seed=0, epoch=epoch, rank=hvd.rank(),
                                    world_size=hvd.size(), batch_size=batch)
        for epoch in (0, 1)}
report = {"rank": hvd.rank(), "size": hvd.size(),
          "real": {e: s.real.tolist() for e, s in mine.items()},
          "slots": {e: len(s.indices) for e, s in mine.items()}}
gathered = hvd.allgather_object(report)
if hvd.rank() == 0:
    with open(out, "w") as f:
        json.dump(gathered, f)
