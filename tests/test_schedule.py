import pytest

from resnet.config import Config
from resnet.training.schedule import Schedule, WarmupCosine, learning_rate


def test_schedule_scales_with_ranks():
    plan = Schedule(Config(batch_size=64, learning_rate=0.01, epochs=2, warmup_epochs=0.5,
                       weights="none"), world_size=4, num_train=50000)
    assert plan.global_batch_size == 256
    assert plan.steps_per_epoch == 196  # ceil(50000 / 256)
    assert plan.total_steps == 392
    assert plan.peak_learning_rate == pytest.approx(0.04)
    assert plan.warmup_steps == 98


def test_warmup_then_cosine_to_zero():
    s = WarmupCosine(start=0.01, peak=0.04, warmup=10, total=110)
    assert float(s(0)) == pytest.approx(0.01)
    assert float(s(5)) == pytest.approx(0.025)
    assert float(s(10)) == pytest.approx(0.04)
    assert float(s(60)) == pytest.approx(0.02)
    assert float(s(110)) == pytest.approx(0.0, abs=1e-9)
    assert float(s(500)) == pytest.approx(0.0, abs=1e-9)


def test_later_phase_continues_the_curve():
    plan = Schedule(Config(epochs=3, freeze_epochs=1, weights="none"), world_size=2, num_train=1280)
    whole = learning_rate(plan)
    later = learning_rate(plan, offset=plan.steps_per_epoch)
    for step in (0, 3, 7):
        assert float(later(step)) == pytest.approx(float(whole(step + plan.steps_per_epoch)))


def test_learning_rate_at_follows_the_step_curve_for_a_fixed_world():
    from resnet.training.schedule import learning_rate_at
    config = Config(epochs=2, warmup_epochs=0.5, learning_rate=0.01, weights="none")
    plan = Schedule(config, world_size=4, num_train=25600)  # 100 steps per epoch
    steps = learning_rate(plan)
    for step in (0, 10, 50, 73, 150, 199, 200):
        position = step / plan.steps_per_epoch
        assert learning_rate_at(config, position, 4) == pytest.approx(float(steps(step)),
                                                                       abs=1e-7)
    # Fewer ranks: the same point of the curve at the rate scaled for the ranks left.
    assert learning_rate_at(config, 1.0, 2) == pytest.approx(learning_rate_at(config, 1.0, 4) / 2)


@pytest.mark.parametrize("world_size", [1, 4])
def test_warmup_from_zero_ramps_at_any_rank_count_and_elastic_follows(world_size):
    from resnet.training.schedule import learning_rate_at
    base = Config(epochs=2, warmup_epochs=0.5, learning_rate=0.01, weights="none", batch_size=64)
    zero = Config(epochs=2, warmup_epochs=0.5, learning_rate=0.01, weights="none", batch_size=64,
                  warmup_from="zero")
    plan = Schedule(zero, world_size=world_size, num_train=6400 * world_size)  # 100 steps per epoch
    steps = learning_rate(plan)
    peak = 0.01 * world_size
    assert float(steps(0)) == 0.0
    assert float(steps(25)) == pytest.approx(peak / 2)
    assert float(steps(50)) == pytest.approx(peak)
    # After the warmup the curve is the same cosine as with the default start.
    default = learning_rate(Schedule(base, world_size=world_size, num_train=6400 * world_size))
    for step in (50, 120, 200):
        assert float(steps(step)) == pytest.approx(float(default(step)), abs=1e-7)
    # The default starts at the single-rank rate: at 1 rank that is no warmup at all.
    assert float(default(0)) == pytest.approx(0.01)
    for step in (0, 25, 50, 150):
        assert learning_rate_at(zero, step / 100, world_size) == pytest.approx(
            float(steps(step)), abs=1e-7)


def test_warmup_from_is_checked():
    from resnet.errors import UsageError
    with pytest.raises(UsageError, match="--warmup_from=one"):
        Config(weights="none", warmup_from="one")
