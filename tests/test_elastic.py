"""--elastic's refusals, in-process: each needs a collective before training, which elastic mode
must not have. The real elastic runs (a host that joins, rank 0 killed, a link cut; the
survivors finish and evaluate as one process does) run across emulated hosts: test_cluster.
That a refused Config exits 2 before anything is written: test_config's command-line refusals."""

import pytest

from resnet.config import Config
from resnet.errors import UsageError


@pytest.mark.parametrize("extra, message", [
    (dict(freeze_epochs=1), "--elastic does not combine with --freeze_epochs"),
    (dict(download=True), "--elastic does not combine with --download"),
    (dict(eval_only=True), "--elastic does not combine with --eval_only"),
    (dict(start_image_size=32), "--elastic does not combine with --start_image_size"),
])
def test_elastic_refuses_what_needs_a_collective_before_training(tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        Config(elastic=True, epochs=2, weights="none", model_dir=str(tmp_path / "m"), **extra)
    Config(elastic=True, epochs=2, weights="none", model_dir=str(tmp_path / "m"))  # alone: fine
    assert not (tmp_path / "m").exists()
