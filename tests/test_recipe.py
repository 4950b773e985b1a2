"""make train's ranks and batch (resnet/launch/recipe.py): the layout changes, the recipe holds."""
import os
import subprocess
import sys

import pytest

from resnet.config import Config
from resnet.errors import UsageError
from resnet.launch import recipe
from resnet.runtime import topology
from resnet.training.schedule import Schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(flags):
    values = dict(f[2:].split("=") for f in flags)
    return Config(batch_size=int(values["batch_size"]),
                  learning_rate=float(values["learning_rate"]), weights="none")


@pytest.mark.parametrize("ranks", [1, 2, 4, 8, 16])
def test_every_rank_count_trains_the_recipes_global_batch_and_peak_rate(ranks):
    measured = Schedule(Config(weights="none"), world_size=recipe.RECIPE_RANKS, num_train=50000)
    held = Schedule(_config(recipe.flags(ranks)), world_size=ranks, num_train=50000)
    assert held.global_batch_size == measured.global_batch_size == 64
    assert held.peak_learning_rate == pytest.approx(measured.peak_learning_rate)
    assert held.steps_per_epoch == measured.steps_per_epoch


def test_two_ranks_are_the_defaults():
    assert _config(recipe.flags(2)) == Config(weights="none")


@pytest.mark.parametrize("ranks", [0, 3, 5, 128])
def test_a_rank_count_the_batch_does_not_split_over_is_refused(ranks):
    with pytest.raises(UsageError, match="does not split"):
        recipe.flags(ranks)


def test_default_is_one_rank_per_socket():
    assert recipe.default_ranks(topology.Topology(1, 2, 1)) == 1
    assert recipe.default_ranks(topology.Topology(2, 28, 2)) == 2


def test_the_command_prints_ranks_then_flags_and_refuses_a_bad_np():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "resnet.launch.recipe", *args], cwd=ROOT,
                              capture_output=True, text=True)
    ok = run("--np", "1")
    assert ok.returncode == 0 and ok.stdout.split() == ["1", "--batch_size=64",
                                                        "--learning_rate=0.004"]
    here = run()
    assert here.returncode == 0
    assert int(here.stdout.split()[0]) == topology.read().sockets
    bad = run("--np", "3")
    assert bad.returncode == 2 and "does not split over 3 ranks" in bad.stderr and not bad.stdout
