"""The running rank and the machine under it: the node's topology and CPU flags (topology), a
rank's threads (threads) and environment (env), its place in the job (world: World, is_chief,
rank-0 decisions) and where it really runs (placement).

Below resnet.launch, which plans ranks with these rules; nothing here imports resnet.launch
(tests/test_layers.py).
"""
