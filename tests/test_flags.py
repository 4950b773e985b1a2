"""Command lines parsed in-process, as train_dist.py parses them: presets, flags that win over
them, --precision=auto, and refusals (absl's for malformed values, ours for nonsense)."""

import dataclasses

import pytest
from absl import app, flags

from resnet import flags as resnet_flags
from resnet import presets
from resnet.config import Config, resolve_precision
from resnet.errors import UsageError


def parse(*argv) -> Config:
    fv = flags.FlagValues()
    resnet_flags.define(fv)
    fv(["train_dist.py", *argv])
    return resnet_flags.to_config(fv)


def test_no_flags_is_the_default_config_which_is_the_fast_recipe():
    assert parse() == Config()
    assert presets.apply("fast", {}) == dataclasses.replace(Config(), preset="fast")
    c = Config()
    # What BENCHMARKS.md measured as the fastest route to 90% (README's first screen).
    assert (c.image_size, c.train_from, c.epochs, c.batch_size, c.learning_rate, c.precision) \
        == (96, "conv4", 2, 32, 0.002, "auto")


def test_a_preset_overrides_the_defaults_and_flags_given_win_over_it():
    best = parse("--preset=best")
    assert (best.preset, best.image_size, best.warmup_from, best.test_time_flip) == (
        "best", 160, "zero", True)
    assert best.train_from == Config().train_from  # what the preset leaves alone stays default
    mine = parse("--preset=best", "--image_size=128", "--test_time_flip=false")
    assert (mine.image_size, mine.test_time_flip, mine.warmup_from) == (128, False, "zero")
    # A flag given with the default's value still wins over the preset.
    assert parse("--preset=debug", "--image_size=96").image_size == 96
    assert parse("--preset=debug").effective().max_train_examples == 256


def test_every_preset_is_a_valid_config_of_known_fields():
    for name, overrides in presets.PRESETS.items():
        c = presets.apply(name, {})
        assert c.preset == name
        assert {k: getattr(c, k) for k in overrides} == overrides


def test_bad_preset_and_bad_values_are_refused():
    with pytest.raises(flags.IllegalFlagValueError, match="preset"):
        parse("--preset=fastest")
    with pytest.raises(UsageError, match="--preset=fastest: use one of fast, best, debug"):
        presets.apply("fastest", {})
    with pytest.raises(UsageError, match="--batch_size=0: must be a positive number"):
        parse("--batch_size=0")
    with pytest.raises(UsageError, match="--freeze_epochs=3 is more than --epochs=2"):
        parse("--preset=best", "--freeze_epochs=3")
    with pytest.raises(flags.IllegalFlagValueError, match="precision"):
        parse("--precision=fp16")


def test_precision_auto_is_bf16_only_where_the_cpu_has_bf16_arithmetic():
    assert resolve_precision("auto", frozenset({"avx2", "fma"})) == "fp32"
    assert resolve_precision("auto", frozenset({"avx2", "avx512f", "avx512_bf16"})) == "bf16"
    assert resolve_precision("auto", frozenset({"amx_tile", "amx_bf16"})) == "bf16"
    assert resolve_precision("fp32", frozenset({"avx512_bf16"})) == "fp32"
    assert resolve_precision("bf16", frozenset({"avx2"})) == "bf16"  # asked for: kept, warned
    assert Config().effective().precision in ("fp32", "bf16")  # never 'auto' when run


def test_the_entry_point_rejects_stray_arguments():
    import train_dist  # defines its flags on absl's global FLAGS, once
    with pytest.raises(app.UsageError, match="unexpected arguments: stray"):
        train_dist.main(["train_dist.py", "stray"])
