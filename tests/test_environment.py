"""requirements*.txt, environment.yml, tools/setup.sh and the installed packages agree."""

import json
import os
import re
from importlib import metadata

import pytest
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


def _file_pins(name):
    with open(os.path.join(ROOT, name)) as f:
        return _pins(f)


def _setup_sh():
    return open(os.path.join(ROOT, "tools", "setup.sh")).read()


def test_conda_and_pip_pins_agree():
    with open(os.path.join(ROOT, "environment.yml")) as f:
        text = f.read()
    env = yaml.safe_load(text)
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == _file_pins("requirements.txt")
    # The --no-deps pins are a step in environment.yml's instructions, not its pip section.
    for name, version in _file_pins("requirements-nodeps.txt").items():
        assert f"pip install --no-deps {name}=={version}" in text
    python = next(d for d in env["dependencies"] if str(d).startswith("python="))
    supported = re.search(r"^supported=\((.*)\)$", _setup_sh(), re.M).group(1).split()
    assert python.split("=")[1] in supported


def test_installed_versions_are_the_pinned_ones():
    pins = {**_file_pins("requirements.txt"), **_file_pins("requirements-nodeps.txt")}
    for name, version in pins.items():
        assert metadata.version(name) == version, name
    # tf-keras follows TensorFlow's minor version (it is built for exactly one).
    assert pins["tf-keras"].rsplit(".", 1)[0] == pins["tensorflow-cpu"].rsplit(".", 1)[0]


def test_the_full_tensorflow_wheel_is_not_installed_beside_tensorflow_cpu():
    # tf-keras asks for `tensorflow`; both wheels write the same files (requirements-nodeps.txt).
    try:
        metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        return
    raise AssertionError("the `tensorflow` wheel is installed beside tensorflow-cpu")


def test_horovod_is_the_pinned_one_built_with_mpi_gloo_against_this_tensorflow():
    source_sh = open(os.path.join(ROOT, "tools", "horovod_source.sh")).read()
    pinned = re.search(r"^horovod_version=(\S+)$", source_sh, re.M).group(1)
    assert metadata.version("horovod") == pinned
    assert f"horovod {pinned}" in open(os.path.join(ROOT, "environment.yml")).read()
    assert f"horovod=={pinned}" in open(os.path.join(ROOT, "requirements.txt")).read()
    import horovod
    import horovod.tensorflow as hvd
    import tensorflow as tf
    assert hvd.mpi_built() and hvd.gloo_built()
    # Horovod's build records the TensorFlow it compiled against; a mismatch breaks its ops' ABI.
    meta = os.path.join(os.path.dirname(horovod.__file__), "metadata.json")
    built = json.load(open(meta))
    assert built["tensorflow"] == tf.__version__, built


def test_horovod_keras_layer_uses_tf_keras():
    # third_party/horovod/0002: Horovod's Keras layer takes its backend from tf.keras (tf_keras).
    import horovod.tensorflow.keras as hvd_keras
    import horovod.tensorflow.keras.callbacks as hvd_callbacks
    import tensorflow as tf
    assert tf.keras.__name__.startswith("tf_keras")
    for module in (hvd_keras, hvd_callbacks):
        assert module.K.__name__.startswith("tf_keras"), module.K
        assert hasattr(module.K, "get_value") and hasattr(module.K, "set_value")


@pytest.mark.slow  # a TensorFlow subprocess
def test_resnet_refuses_a_tf_keras_already_bound_to_keras_3():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    code = "import tensorflow as tf; tf.keras.Model; import resnet"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "tf.keras was already used as Keras 3: import resnet before using tf.keras" in proc.stderr
