"""Set-up and test tools: the two commands (shell), the patched Horovod source, and netcluster
(an emulated cluster of hosts on one machine), which the tests and benchmarks import."""
