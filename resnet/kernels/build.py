"""Build the job's kernels for this environment: `python -m resnet.kernels.build [--prefix=DIR]`
(tools/setup.sh runs it; DIR: another environment's prefix than this Python's). Prints the
library's path; a second run finds it and compiles nothing. The compiler: $CXX, else g++.

Compiled with g++ against the installed TensorFlow's headers and library, the sources side by
side. Written to a temporary name and renamed, so that a process loading it never sees half a
file. Exit 1, with what to do, when there is no compiler or the compile fails.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import resnet  # noqa: F401  (the job's environment before TensorFlow loads)
from resnet import kernels


def build(prefix=None, compiler: str = "") -> str:
    """The library's path, compiled first if it is not there."""
    path = kernels.library_path(prefix)
    compiler = compiler or os.environ.get("CXX") or "g++"
    if os.path.exists(path):
        return path
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no {compiler} on PATH to build resnet/kernels: install one (Debian: "
                           "'sudo apt-get install g++'), then run tools/setup.sh again")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory() as objects:
            _compile(compiler, objects, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        # Builds of older sources: nothing loads them (a process that has one open keeps it).
        for name in os.listdir(os.path.dirname(path)):
            if name.startswith("kernels-") and name.endswith(".so") and \
                    name != os.path.basename(path):
                os.remove(os.path.join(os.path.dirname(path), name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _compile(compiler: str, objects: str, out: str) -> None:
    # One compiler per source, side by side (the sources are independent; on 2 cores this
    # halves set-up's wait), then one link.
    flags = kernels.compile_flags()
    jobs = []
    for name in kernels.SOURCES:
        obj = os.path.join(objects, name + ".o")
        jobs.append((obj, subprocess.Popen(
            [compiler, "-c", os.path.join(kernels.HERE, name), "-o", obj, *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    failed = []
    for _, proc in jobs:  # every compiler waited for, the first failure reported
        err = proc.communicate()[1]
        if proc.returncode:
            failed.append(err)
    if not failed:
        done = subprocess.run([compiler, *(obj for obj, _ in jobs), "-o", out, *flags],
                              capture_output=True, text=True)
        failed = [done.stderr] if done.returncode else []
    if failed:
        raise RuntimeError(f"{compiler} could not build resnet/kernels:\n{failed[0][-4000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnet.kernels.build",
                                description=__doc__.split("\n")[0])
    p.add_argument("--prefix", default=None, help="the environment's prefix (default: this one)")
    a = p.parse_args(argv)
    try:
        print(build(a.prefix))
    except RuntimeError as e:
        print(f"resnet.kernels.build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
