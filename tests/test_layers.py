"""The package's layers: which part of resnet/ may import which, read from the source itself
(every import, also those inside functions), and the launch layer free of TensorFlow."""

import ast
import os
import subprocess
import sys

from conftest import ROOT, job_env

# Each part of the package and what it may import from resnet/ besides itself. Launch sits above
# the runtime (it plans ranks with the runtime's rules) and beside training: nothing below
# imports it, and it imports nothing that loads TensorFlow. It reads the config (no TensorFlow
# there either): make train holds the defaults' global batch at any rank count (recipe.py).
ALLOWED = {
    "resnet.errors": set(),
    "resnet.fileio": {"resnet.errors"},
    "resnet.runtime": {"resnet.errors", "resnet.fileio"},
    "resnet.config": {"resnet.errors", "resnet.fileio", "resnet.runtime"},
    "resnet.presets": {"resnet.errors", "resnet.config"},
    "resnet.flags": {"resnet.errors", "resnet.config", "resnet.presets"},
    "resnet.data": {"resnet.errors", "resnet.fileio", "resnet.config", "resnet.runtime"},
    # The job's own TensorFlow kernels (C++ built at set-up) and their loader: nothing of ours.
    "resnet.kernels": set(),
    "resnet.model": {"resnet.errors", "resnet.config", "resnet.runtime", "resnet.kernels"},
    "resnet.training": {"resnet.errors", "resnet.fileio", "resnet.config", "resnet.runtime",
                        "resnet.data", "resnet.model", "resnet.kernels"},
    "resnet.serving": {"resnet.errors", "resnet.fileio", "resnet.data", "resnet.model",
                       "resnet.training", "resnet.runtime"},
    "resnet.launch": {"resnet.errors", "resnet.fileio", "resnet.runtime", "resnet.config"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _imports(path: str):
    """(line, module) of every resnet import in the file at `path`."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from resnet import x` imports resnet.x; `from resnet.a import b` imports resnet.a
            names = ([f"{node.module}.{a.name}" for a in node.names] if node.module == "resnet"
                     else [node.module])
        else:
            continue
        yield from ((node.lineno, n) for n in names if n.startswith("resnet."))


def _modules():
    for folder, _, files in os.walk(os.path.join(ROOT, "resnet")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield path, rel.removesuffix(".__init__")


def test_every_import_goes_down_or_sideways():
    wrong = []
    for path, module in _modules():
        if module == "resnet":  # the package's own __init__: the runtime's defaults, first
            continue
        here = _part(module)
        assert here in ALLOWED, f"{module}: a new part of the package; give it a layer here"
        for line, imported in _imports(path):
            there = _part(imported)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{os.path.relpath(path, ROOT)}:{line} imports {imported}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # The check itself can fail: a runtime module importing the launch layer is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from resnet.launch.plan import main\n")
    assert list(_imports(str(bad))) == [(2, "resnet.launch.plan")]
    assert "resnet.launch" not in ALLOWED["resnet.runtime"]


def test_the_launch_layer_loads_no_tensorflow():
    code = ("import sys; import resnet.launch.plan, resnet.launch.slurm, resnet.launch.discovery; "
            "print(sorted(m for m in ('tensorflow', 'horovod', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
