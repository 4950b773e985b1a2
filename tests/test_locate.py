"""Finding the data, and --download against a real HTTP server on loopback (never the network)."""

import hashlib
import os
import subprocess
import sys

import pytest

import cifar_files
from conftest import ROOT, job_env
from resnet.data import locate
from resnet.errors import UsageError


def _archive(tmp_path, splits):
    folder = cifar_files.write_python(str(tmp_path / "src"), *splits)
    return cifar_files.make_tar(folder, str(tmp_path / "a.tar.gz"), "cifar-10-batches-py")


def test_download_checks_md5_and_keeps_only_good_files(tmp_path, splits, served):
    www, base = served
    archive = _archive(tmp_path, splits)
    (www / "c.tar.gz").write_bytes(open(archive, "rb").read())
    good = hashlib.md5(open(archive, "rb").read()).hexdigest()
    dest = tmp_path / "dest"
    with pytest.raises(UsageError, match="has MD5 .* expected 0+; .*Nothing was kept"):
        locate.download(str(dest), f"{base}/c.tar.gz", expected_md5="0" * 32)
    assert os.listdir(dest) == []
    path = locate.download(str(dest), f"{base}/c.tar.gz", expected_md5=good)
    assert path == str(dest / locate.ARCHIVE_NAME) and locate.md5(path) == good
    # A second call finds the verified file and does not fetch again.
    (www / "c.tar.gz").unlink()
    assert locate.download(str(dest), f"{base}/c.tar.gz", expected_md5=good) == path


def test_offline_download_says_where_to_put_files(tmp_path, served):
    _, base = served
    with pytest.raises(UsageError, match=r"cannot download .*Put cifar-10-python.tar.gz"):
        locate.download(str(tmp_path / "d"), f"{base}/missing.tar.gz")


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    with pytest.raises(UsageError, match="CIFAR-10 not found.*--download"):
        locate.find(None)
    cache = tmp_path / "home" / ".keras" / "datasets" / "cifar-10-batches-py"
    cache.mkdir(parents=True)
    assert locate.find(None) == str(cache)
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "env"))
    with pytest.raises(UsageError, match=r"\$CIFAR10_DIR=.*env: no such file"):
        locate.find(None)
    (tmp_path / "env").mkdir()
    assert locate.find(None) == str(tmp_path / "env")
    assert locate.find("/given") == "/given"


@pytest.mark.slow  # a real job (TensorFlow)
def test_job_with_wrong_md5_mirror_exits_2(tmp_path, splits, served):
    www, base = served
    (www / "c.tar.gz").write_bytes(open(_archive(tmp_path, splits), "rb").read())
    proc = subprocess.run(
        [sys.executable, "train_dist.py", "--weights=none", "--download",
         f"--download_url={base}/c.tar.gz", f"--data_dir={tmp_path}/data",
         f"--model_dir={tmp_path}/m"], cwd=ROOT, env=job_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2
    assert "downloaded file has MD5" in proc.stderr
    assert not os.path.exists(tmp_path / "m" / "metrics.json")
    assert os.listdir(tmp_path / "data") == []
