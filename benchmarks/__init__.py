"""Speed measurements of the job (every speed figure in BENCHMARKS.md comes from one of these).

Tools, not the job: they import resnet/, and resnet/ never imports them. Run from the checkout,
e.g. `.venv/bin/python -m benchmarks.harness`.
"""
