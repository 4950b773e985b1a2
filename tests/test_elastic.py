"""--elastic's refusals. The real elastic runs (a host that joins, rank 0 killed, a link cut; the
survivors finish and evaluate as one process does) run across emulated hosts: test_cluster."""

import os

import pytest

from conftest import run_job

pytestmark = pytest.mark.slow  # starts train_dist.py (TensorFlow)


def test_elastic_refuses_what_needs_a_collective_before_training(tmp_path, image_tar):
    proc = run_job([f"--data_dir={image_tar}", f"--model_dir={tmp_path}/m", "--elastic",
                    "--freeze_epochs=1", "--weights=none"], check=False)
    assert proc.returncode == 2
    assert "--elastic does not combine with --freeze_epochs" in proc.stderr
    assert not os.path.exists(tmp_path / "m")
