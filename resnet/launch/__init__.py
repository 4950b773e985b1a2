"""Launching ranks: host lists, the layout of ranks over a node's cores, the network the hosts
share, one command per launcher, Slurm, elastic host discovery, the network cost model.

The layer above the runtime: it imports resnet.runtime (the machine's topology, a rank's threads
and environment) and nothing imports it but the entry points and the launch scripts
(tests/test_layers.py). Kept free of TensorFlow: launch scripts run it on login nodes and inside
batch scripts.
"""

from resnet.fileio import CHECKOUT  # noqa: F401  (the launch modules' one name for it)
