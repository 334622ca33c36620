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


def test_every_preset_has_a_summary():
    from worldmodels.config import PRESET_SUMMARY

    assert list(PRESET_SUMMARY) == list(PRESETS)


def test_make_help_lists_every_target_and_preset():
    import re
    import subprocess

    from tests.conftest import ROOT

    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    makefile = (ROOT / "Makefile").read_text()
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for t in line.split()}
    listed = set(re.findall(r"^  ([a-z][a-z-]*) ", out, re.M))
    assert phony <= listed, phony - listed
    for preset in PRESETS:
        assert preset in out
    for variable in ("CONFIG", "RUN", "AGENT", "EPISODES", "SEED", "ARGS", "RAY_ADDRESS"):
        assert f"  {variable}=" in out or f" {variable}=" in out, variable


@pytest.mark.parametrize("stage, section", [("rollouts", "rollouts"), ("train_vae", "vision"),
                                            ("train_rnn", "mdnrnn"), ("train_controller", "controller"),
                                            ("evaluate", "eval"), ("iterate", "iterate")])
def test_stage_help_lists_fields_docs_and_preset_values(stage, section, capsys):
    import dataclasses
    import importlib

    from worldmodels.config import PRESET_SUMMARY, field_docs

    module = importlib.import_module(f"pipeline.{stage}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--config", "doom-quick", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    part = getattr(get_config("doom-quick"), section)
    docs = field_docs(type(part))
    for f in dataclasses.fields(part):
        value = getattr(part, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert f"  --{section}.{f.name} {shown}\n" in out, f.name
    for name, doc in docs.items():  # every field is documented, and its docstring shown
        assert doc and doc[:60] in " ".join(out.split()), name
    for name, summary in PRESET_SUMMARY.items():
        assert f"{name}" in out and summary in out
