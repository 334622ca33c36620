import json

import pytest

from worldmodels.config import PRESETS, Config, get_config, parse_overrides
from worldmodels.errors import ConfigError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_resolve_and_round_trip_through_json(preset):
    config = get_config(preset)
    assert config.preset == preset
    assert Config.from_dict(json.loads(config.to_json())) == config


def test_overrides_both_spellings_and_types():
    config = get_config("tiny", ["--rollouts.episodes", "7", "--rollouts.policy=random",
                                 "--rollouts.brownian_dt=0.5"])
    assert config.rollouts.episodes == 7
    assert config.rollouts.policy == "random"
    assert config.rollouts.brownian_dt == 0.5


def test_config_is_frozen():
    config = get_config("tiny")
    with pytest.raises(AttributeError):
        config.rollouts.episodes = 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--rollouts.nope", "1"], "unknown config field 'rollouts.nope'"),
        (["--nosection.x", "1"], "unknown config field 'nosection.x'"),
        (["--rollouts.episodes", "many"], "expects int"),
        (["--rollouts.episodes"], "has no value"),
        (["rollouts.episodes"], "expected '--section.field value'"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_config("tiny", overrides)


def test_unknown_preset_lists_valid_ones():
    from worldmodels.config import PRESETS

    with pytest.raises(ConfigError, match="unknown preset 'huge'; valid presets: " + ", ".join(sorted(PRESETS))):
        get_config("huge")
    assert {"tiny", "quick", "default", "paper", "doom-tiny", "doom-default"} <= set(PRESETS)


def test_parse_overrides():
    assert parse_overrides(["--a.b", "1", "--c.d=x=y"]) == [("a.b", "1"), ("c.d", "x=y")]
