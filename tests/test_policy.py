"""Policy schemas: presets, schedules, JSON round trip, clear errors on invalid policies."""

from __future__ import annotations

import json

import pytest

from searchvlm.schema.errors import ConfigError, validate
from searchvlm.schema.policy import (
    PRESETS,
    CosineSchedule,
    FastVSchedule,
    PyramidSchedule,
    ReductionPolicy,
    ShallowSchedule,
    load_policy,
    preset,
    shallow_layers,
)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("layers", [2, 3, 4, 8, 24])
def test_every_preset_compiles_and_round_trips(name: str, layers: int) -> None:
    if layers == 2 and "hmgen" in name:  # no room for a shallow layer between full first and last
        with pytest.raises(ValueError, match="HMGen needs at least 3 layers"):
            preset(name, layers)
        return
    p = preset(name, layers)
    assert p.num_layers == layers
    again = ReductionPolicy.model_validate_json(p.to_json())
    assert again == p


def test_schedules_compile() -> None:
    assert FastVSchedule(start=2, ratio=0.5).compile(4) == [1, 1, 0.5, 0.5]
    assert PyramidSchedule(ratio=0.5).compile(8) == [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert ShallowSchedule(k=3).compile(8) == [1, 0, 1, 0, 1, 0, 1, 1]
    cos = CosineSchedule(floor=0.15).compile(5)
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.15)
    assert all(a >= b for a, b in zip(cos, cos[1:]))
    assert shallow_layers(12, 5) == [1, 3, 5, 7, 9]
    assert shallow_layers(4, 3) == [1]  # clipped to (L-1)//2


def test_literature_presets_match_the_study() -> None:
    himix = preset("himix", 8)
    assert himix.understanding.mode == "query_drop"
    assert himix.understanding.keep == [1.0] + [0.0] * 7
    assert himix.generation.is_dense
    hmgen = preset("hmgen", 8)
    assert hmgen.generation.mode == "skip" and hmgen.sharing.qkv == "modality"
    assert preset("himix_hmgen_partial", 8).sharing.qkv == "task_image"
    assert preset("tied", 8).tie_schedules
    assert ReductionPolicy.dense(3).is_dense


def _policy(**over):
    base = {
        "num_layers": 3,
        "understanding": {"keep": [1.0, 0.5, 0.5], "mode": "drop"},
        "generation": {"keep": [1.0, 1.0, 0.5], "mode": "skip"},
    }
    for key, value in over.items():
        task, _, field = key.partition("__")
        if field:
            base[task] = {**base[task], field: value}
        else:
            base[task] = value
    return base


@pytest.mark.parametrize(
    ("over", "key", "fragment"),
    [
        ({"understanding__keep": [1.0, 1.5, 0.5]}, "understanding.keep[1]", "1.5"),
        ({"understanding__keep": [1.0, -0.1, 0.0]}, "understanding.keep[1]", "-0.1"),
        ({"understanding__keep": [1.0, float("nan"), 0.0]}, "understanding.keep[1]", "finite"),
        ({"understanding__keep": [1.0, 0.5]}, "understanding.keep", "num_layers = 3"),
        ({"generation__mode": "drop"}, "generation.mode", "drop"),
        ({"understanding__keep": [0.5, 1.0, 0.5]}, "understanding.keep", "non-increasing"),
        ({"understanding__selector": "magic"}, "understanding.selector", "magic"),
        ({"bogus": 1}, "bogus", "Extra inputs"),
        ({"understanding__colour": "red"}, "understanding.colour", "Extra inputs"),
    ],
)
def test_invalid_policies_name_field_and_value(over, key, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        validate(ReductionPolicy, _policy(**over), "p.json")
    msg = str(info.value)
    assert msg.startswith("p.json: ")
    assert key in msg and fragment in msg


def test_load_policy_file_checks_layers(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(preset("himix", 4).to_json())
    assert load_policy(path).name == "himix"
    with pytest.raises(ConfigError, match="target model has 6 layers"):
        load_policy(path, num_layers=6)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_policy(path)
    infinite = {"num_layers": 2, "understanding": {"keep": [1, 1]}, "generation": {"keep": [1, "Infinity"]}}
    path.write_text(json.dumps(infinite))
    with pytest.raises(ConfigError):
        load_policy(path)
