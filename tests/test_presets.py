"""The preset registry: one list of names feeds `preset()`, `PRESETS`, reproduce's rows and
the spaces' check; every preset states its rule; the old import path still works."""

from __future__ import annotations

import pytest

from searchvlm import policy, reproduce
from searchvlm.errors import ConfigError
from searchvlm.presets import PRESETS, REGISTRY, compile_presets, preset


def test_one_registry_feeds_every_list() -> None:
    assert PRESETS == tuple(REGISTRY)
    assert [name for _, name in reproduce.ROWS] == list(PRESETS)
    assert reproduce.ROWS[0] == ("Unified (dense)", "dense") and reproduce.ROWS[-1][1] == "tied"
    assert policy.PRESETS is PRESETS and policy.preset is preset  # re-exported for old imports


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_states_its_rule_and_name(name: str) -> None:
    entry = REGISTRY[name]
    assert entry.label and len(entry.rule) > 20
    assert preset(name, 8) == entry.policy(8) and preset(name, 8).name == name


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid presets: dense, fastv, pyramiddrop"):
        preset("nope", 4)


def test_compile_presets_lists_every_preset_and_names_the_depth_it_refuses() -> None:
    compiled = compile_presets(4)
    assert list(compiled) == list(PRESETS) and compiled["fastv"] == preset("fastv", 4)
    with pytest.raises(ConfigError, match="--layers = 0: must be a layer count of at least 1"):
        compile_presets(0)
    with pytest.raises(ConfigError, match="--layers = 1: preset 'fastv' does not fit this depth"):
        compile_presets(1)
