"""tools/setup.sh: which Python it takes, and a whole set-up on another Python into a throw-away
venv (TensorFlow and our patched Horovod importable, Horovod's Keras layer working under a real
horovodrun), a venv of the wrong Python rebuilt, a half-made one completed, a second run quick."""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SETUP = os.path.join(ROOT, "tools", "setup.sh")


def _setup(*args, env=None, timeout=60):
    return subprocess.run(["/bin/bash", SETUP, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _fake_bin(tmp_path, pythons):
    """A PATH folder holding only dirname and fake interpreters that report the given versions."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/usr/bin/dirname", bin_dir / "dirname")
    for name, version in pythons.items():
        (bin_dir / name).write_text(f"#!/bin/sh\necho {version}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_takes_python3_when_it_is_supported():
    proc = _setup("--which-python")
    version = "%d.%d" % sys.version_info[:2]  # tools/test.sh runs the suite in the venv it chose
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([proc.stdout.strip(), "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.startswith(version)


def test_an_unsupported_python3_sends_it_to_a_supported_one_and_says_so(tmp_path):
    bin_dir = _fake_bin(tmp_path, {"python3": "3.14", "python3.12": "3.12"})
    proc = _setup("--which-python", env={"PATH": bin_dir, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python3.12"
    assert "python3 is not Python 3.10-3.13; using python3.12" in proc.stderr


def test_no_supported_python_is_one_line_naming_what_to_install(tmp_path):
    bin_dir = _fake_bin(tmp_path, {"python3": "3.9", "python3.14": "3.14"})
    proc = _setup("--which-python", env={"PATH": bin_dir, "HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "python3 is 3.9" in lines[0]
    assert "apt-get install python3.12 python3.12-venv" in lines[0]
    assert "conda env create -f environment.yml" in lines[0]


@pytest.mark.parametrize("python, message", [
    ("python3.9-that-is-not-there", "does not run"),
    ("FAKE39", "is Python 3.9; TensorFlow 2.21 needs 3.10 to 3.13"),
])
def test_a_named_python_is_taken_or_refused_never_replaced(tmp_path, python, message):
    bin_dir = _fake_bin(tmp_path, {"FAKE39": "3.9", "python3": sys.version.split()[0][:4]})
    proc = _setup("--which-python", env={"PATH": bin_dir, "HOME": str(tmp_path),
                                         "PYTHON": python})
    assert proc.returncode == 1
    assert message in proc.stderr


def _other_python(versions):
    """A real interpreter of one of `versions` other than the one running the tests."""
    ours = "%d.%d" % sys.version_info[:2]
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                          timeout=30).stdout.strip() if _which("pyenv") else ""
    for v in versions:
        if v == ours:
            continue
        found = sorted(glob.glob(f"{root}/versions/{v}.*/bin/python{v}")) if root else []
        if _which(f"python{v}"):
            found.append(_which(f"python{v}"))
        for cand in found:
            ok = subprocess.run([cand, "-c", "pass"], capture_output=True, timeout=30)
            if ok.returncode == 0:
                return cand
    return None


def _which(name):
    import shutil
    return shutil.which(name)


def _venv_python_version(venv):
    return subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                           "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.slow
def test_whole_setup_on_another_python_into_a_throwaway_venv(tmp_path):
    """Slow: a TensorFlow install into a new venv, and on a machine that has not built Horovod
    for that Python yet, Horovod's compile (about 5 to 8 minutes on 2 cores; later runs take the
    kept wheel)."""
    new = _other_python(["3.12", "3.13"])
    old = _other_python(["3.10", "3.13"])
    if not new or not old:
        pytest.skip("needs a Python 3.12 or 3.13 and another Python (pyenv has them here)")
    venv = str(tmp_path / "venv")
    # A venv made by another Python, as a user's old set-up leaves it.
    subprocess.run([old, "-m", "venv", venv], check=True, timeout=120)
    old_version = _venv_python_version(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHON=new, VENV=venv)

    first = _setup(env=env, timeout=1800)
    assert first.returncode == 0, first.stderr[-4000:]
    new_version = _venv_python_version(venv)
    assert new_version != old_version and new_version in ("3.12", "3.13")
    assert f"rebuilding {venv}: it was made by Python {old_version}, not Python {new_version}" \
        in first.stderr
    py = os.path.join(venv, "bin", "python")
    check = subprocess.run([py, "-c", (
        "import os, json; os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
        "import tensorflow as tf, horovod, horovod.tensorflow as hvd\n"
        "print(json.dumps([tf.__version__, horovod.__version__, hvd.mpi_built(),"
        " hvd.gloo_built()]))")], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    tf_version, hvd_version, mpi, gloo = json.loads(check.stdout.strip().splitlines()[-1])
    assert tf_version.startswith("2.21") and hvd_version == "0.28.1" and mpi and gloo

    # Horovod's Keras layer for real on that Python, under its own horovodrun.
    out = tmp_path / "keras.json"
    run = subprocess.run([os.path.join(venv, "bin", "horovodrun"), "-np", "2", "-H", "localhost:2",
                          py, os.path.join(ROOT, "tests", "dist_keras_check.py"), str(out)],
                         cwd=ROOT, env=dict(env, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reports = json.loads(out.read_text())
    assert {r["python"] for r in reports} == {new_version}
    assert reports[0]["weights"] == reports[1]["weights"]

    # A second run finds everything: no install, no build.
    second = _setup(env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "installing" not in second.stderr and "building" not in second.stderr
    assert f"ready: {venv} (Python {new_version})" in second.stderr

    # A half-made venv (a package missing, the last set-up unfinished) is completed, not used.
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "absl-py"], check=True, timeout=120)
    os.remove(os.path.join(venv, ".setup-complete"))
    third = _setup(env=env, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "installing requirements.txt" in third.stderr
    assert subprocess.run([py, "-c", "import absl"], timeout=60).returncode == 0


SOURCE = os.path.join(ROOT, "tools", "horovod_source.sh")


def test_a_horovod_sdist_with_another_sha256_is_refused_and_nothing_is_left(tmp_path):
    fake = tmp_path / "horovod-0.28.1.tar.gz"
    tree = tmp_path / "t" / "horovod-0.28.1"
    tree.mkdir(parents=True)
    (tree / "setup.py").write_text("raise SystemExit('must never run')\n")
    subprocess.run(["tar", "-czf", str(fake), "-C", str(tmp_path / "t"), "horovod-0.28.1"],
                   check=True, timeout=60)
    dest = tmp_path / "dest"
    proc = subprocess.run([SOURCE, str(dest), str(fake)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "not horovod 0.28.1's 92a43f5a" in proc.stderr and "not building it" in proc.stderr
    assert list(dest.iterdir()) == []


@pytest.mark.slow
def test_horovod_source_is_the_checked_sdist_with_every_patch_applied(tmp_path):
    """Slow-marked: it downloads horovod's sdist (5 MB) from PyPI, as set-up does."""
    proc = subprocess.run([SOURCE, str(tmp_path / "src")], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PIP=f"{sys.executable} -m pip"))
    assert proc.returncode == 0, proc.stderr
    src = proc.stdout.strip()
    patches = sorted(glob.glob(os.path.join(ROOT, "third_party", "horovod", "*.patch")))
    assert [f"applying {os.path.basename(p)}" in proc.stderr for p in patches] == \
        [True] * len(patches)
    cmake = open(os.path.join(src, "horovod", "tensorflow", "CMakeLists.txt")).read()
    assert 'if (Tensorflow_VERSION VERSION_LESS "2.19")' in cmake
    keras = open(os.path.join(src, "horovod", "tensorflow", "keras", "__init__.py")).read()
    assert "K = keras.backend" in keras
    assert not glob.glob(os.path.join(src, "**", "*.orig"), recursive=True)
