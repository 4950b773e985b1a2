"""Launching ranks: the node's topology, launch plans, Slurm, host discovery, the network model.

Kept free of TensorFlow: launch scripts run these on login nodes and inside batch scripts.
"""

import os

# The checkout these modules live in: train_dist.py and the launch/ scripts that plans name.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
