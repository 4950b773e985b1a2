import pytest

from resnet.config import Config
from resnet.schedule import Plan, WarmupCosine, learning_rate


def test_plan_scales_with_ranks():
    plan = Plan(Config(batch_size=64, learning_rate=0.01, epochs=2, warmup_epochs=0.5,
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
    plan = Plan(Config(epochs=3, freeze_epochs=1, weights="none"), world_size=2, num_train=1280)
    whole = learning_rate(plan)
    later = learning_rate(plan, offset=plan.steps_per_epoch)
    for step in (0, 3, 7):
        assert float(later(step)) == pytest.approx(float(whole(step + plan.steps_per_epoch)))


def test_learning_rate_at_follows_the_step_curve_for_a_fixed_world():
    from resnet.schedule import learning_rate_at
    config = Config(epochs=2, warmup_epochs=0.5, learning_rate=0.01, weights="none")
    plan = Plan(config, world_size=4, num_train=25600)  # 100 steps per epoch
    steps = learning_rate(plan)
    for step in (0, 10, 50, 73, 150, 199, 200):
        position = step / plan.steps_per_epoch
        assert learning_rate_at(config, position, 4) == pytest.approx(float(steps(step)),
                                                                       abs=1e-7)
    # Fewer ranks: the same point of the curve at the rate scaled for the ranks left.
    assert learning_rate_at(config, 1.0, 2) == pytest.approx(learning_rate_at(config, 1.0, 4) / 2)
