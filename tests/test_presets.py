"""The preset registry: one list of names feeds `preset()`, `PRESETS`, reproduce's rows and
the spaces' check; every preset states its rule; the old import path still works."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchvlm.records import reproduce
from searchvlm.schema import policy
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy.presets import PRESETS, REGISTRY, clipping, compile_presets, preset
from searchvlm.schema.space import load_space


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


# --------------------------------------------------------------------------- the study's rules, computed here


def _shallow(num_layers: int, k: int) -> list[int]:
    """HMGen's rule read off its words: K shallow layers alternating with full ones (gaps of 2),
    the first and last layer full, as near the middle as the depth allows (ties: earlier);
    K shrinks to the largest count that fits. Found by trying every placement."""
    for count in range(k, 0, -1):
        placements = [[s + 2 * i for i in range(count)] for s in range(1, num_layers)]
        fits = [p for p in placements if p[-1] <= num_layers - 2]
        if fits:
            return min(fits, key=lambda p: abs((p[0] + p[-1]) / 2 - (num_layers - 1) / 2))
    return []


def _published(name: str, num_layers: int) -> tuple:
    """(understanding keep, mode; generation keep, mode; sharing qkv, mlp, scope) by the rule."""
    dense = ([1.0] * num_layers, "skip")
    himix = ([1.0] + [0.0] * (num_layers - 1), "query_drop")  # keys/values only from layer 1 on
    k = 5 if name == "hmgen5" else 3
    shallow = _shallow(num_layers, k)
    hmgen = ([0.0 if i in shallow else 1.0 for i in range(num_layers)], "skip")
    full = [i for i in range(num_layers) if i not in shallow]  # image/text q/k/v split here
    return {
        "hmgen": (*dense, *hmgen, "modality", "shared", full),
        "hmgen5": (*dense, *hmgen, "modality", "shared", full),
        "himix_hmgen": (*himix, *hmgen, "modality", "shared", full),  # HMGen's split, shared by the tasks
        "himix_hmgen_partial": (*himix, *hmgen, "task_image", "shared", full),  # ... image q/k/v per task
        "himix": (*himix, *dense, "shared", "shared", None),
    }[name]


def _plan(name: str, num_layers: int) -> tuple:
    p = preset(name, num_layers)
    und, gen, sharing = p.understanding, p.generation, p.sharing
    return (und.keep, und.mode, gen.keep, gen.mode, sharing.qkv, sharing.mlp, sharing.scope)


@pytest.mark.parametrize("layers", [4, 8, 12])
@pytest.mark.parametrize("name", ["himix", "hmgen", "hmgen5", "himix_hmgen", "himix_hmgen_partial"])
def test_study_presets_follow_the_published_rule(name: str, layers: int) -> None:
    assert _plan(name, layers) == _published(name, layers)
    assert not preset(name, layers).tie_schedules


def test_the_rule_at_each_depth() -> None:
    """The placements the rule gives (written out, so a wrong `_shallow` fails too)."""
    assert [_shallow(4, 3), _shallow(8, 3), _shallow(8, 5), _shallow(12, 3), _shallow(12, 5)] == [
        [1], [1, 3, 5], [1, 3, 5], [3, 5, 7], [1, 3, 5, 7, 9]
    ]  # fmt: skip
    assert preset("hmgen", 12).generation.keep == [1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1]
    assert preset("hmgen5", 12).generation.keep == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1]


def test_hmgen_k3_and_k5_differ_where_the_depth_allows() -> None:
    assert preset("hmgen", 12).generation != preset("hmgen5", 12).generation
    assert preset("hmgen", 12).sharing.scope != preset("hmgen5", 12).sharing.scope
    assert preset("hmgen", 8).generation == preset("hmgen5", 8).generation  # K=5 clipped: said below
    assert clipping("hmgen5", 8) == "K=5 clipped to K=3 (5 shallow layers alternating with full ones need 11 layers)"
    assert clipping("hmgen5", 12) is None and clipping("hmgen", 12) is None and clipping("hmgen", 8) is None


def test_share_all_and_share_partial_differ_in_the_image_qkv_only() -> None:
    for layers in (4, 8, 12):
        all_, partial, hmgen = (preset(n, layers) for n in ("himix_hmgen", "himix_hmgen_partial", "hmgen"))
        assert all_.sharing == hmgen.sharing  # HMGen's architecture, kept
        assert partial.sharing == all_.sharing.model_copy(update={"qkv": "task_image"})
        assert (partial.understanding, partial.generation) == (all_.understanding, all_.generation)


def test_clipping_is_said_for_every_preset_that_clips() -> None:
    assert {n: clipping(n, 4) for n in PRESETS if clipping(n, 4)} == {
        "hmgen": "K=3 clipped to K=1 (3 shallow layers alternating with full ones need 7 layers)",
        "hmgen5": "K=5 clipped to K=1 (5 shallow layers alternating with full ones need 11 layers)",
        "himix_hmgen": "K=3 clipped to K=1 (3 shallow layers alternating with full ones need 7 layers)",
        "himix_hmgen_partial": "K=3 clipped to K=1 (3 shallow layers alternating with full ones need 7 layers)",
    }
    assert clipping("fastv", 2) == "K=2 clipped to K=1 (K must be below the depth)"
    assert clipping("pyramiddrop", 3) == "2 of 3 stage boundaries (L/4, L/2 and 3L/4 coincide or reach L)"
    assert not any(clipping(n, 12) for n in PRESETS)


def test_a_depth_without_room_for_a_shallow_layer_is_refused() -> None:
    for name in ("hmgen", "hmgen5", "himix_hmgen", "himix_hmgen_partial"):
        with pytest.raises(ValueError, match="HMGen needs at least 3 layers .*; the model has 2"):
            preset(name, 2)
    assert preset("hmgen", 3).generation.keep == [1, 0, 1]
    with pytest.raises(ValueError, match="PyramidDrop needs at least 2 layers"):
        preset("pyramiddrop", 1)
    assert preset("pyramiddrop", 2).understanding.keep == [1, 0.5]
    with pytest.raises(ConfigError, match="--layers = 2: preset 'hmgen' does not fit this depth: HMGen needs"):
        compile_presets(2)


def test_a_space_or_reproduce_refuses_a_preset_its_depth_cannot_build(tmp_path: Path) -> None:
    """Before any training: a warm-start preset at load time, `reproduce`'s rows up front."""
    space = tmp_path / "two.yaml"
    space.write_text("model: {num_layers: 2}\npresets: [dense, hmgen]\n")
    with pytest.raises(ConfigError, match=r"presets = \['dense', 'hmgen'\]: preset 'hmgen' does not fit "
                                          r"model.num_layers = 2: HMGen needs at least 3 layers"):  # fmt: skip
        load_space(space)
    space.write_text("model: {num_layers: 2}\n")
    with pytest.raises(ConfigError, match="--presets = 'hmgen': does not fit model.num_layers = 2: HMGen needs"):
        reproduce.reproduce_config(space)
    fitting = reproduce.ReproduceRequest(presets=["dense", "himix"])
    assert reproduce.reproduce_config(space, fitting).model.num_layers == 2
