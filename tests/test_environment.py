"""requirements.txt, environment.yml and the installed packages agree."""

import os
import re
import sys
from importlib import metadata

import yaml

from conftest import ROOT


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned exactly: {line}"
            pins[name.lower()] = version
    return pins


def test_conda_and_pip_pins_agree():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pip_pins = _pins(f)
    with open(os.path.join(ROOT, "environment.yml")) as f:
        env = yaml.safe_load(f)
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == pip_pins
    assert "python=%d.%d" % sys.version_info[:2] in env["dependencies"]


def test_installed_versions_are_the_pinned_ones():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for name, version in _pins(f).items():
            assert metadata.version(name) == version, name


def test_horovod_pin_is_the_same_everywhere():
    setup = open(os.path.join(ROOT, "tools", "setup.sh")).read()
    pinned = re.search(r"^horovod_version=(\S+)$", setup, re.M).group(1)
    assert metadata.version("horovod") == pinned
    assert f"horovod=={pinned}" in open(os.path.join(ROOT, "environment.yml")).read()
    import horovod.tensorflow as hvd
    assert hvd.mpi_built() and hvd.gloo_built()
