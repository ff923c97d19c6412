"""Schedules: a new kind is one registered class (a `linear` ramp defined here is validated,
sampled, checked and compiled through a search space), the built-in kinds' declarations,
and the compilation of specs into the explicit policy (drop clamp, tied generation)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Literal

import optuna
import pytest
from pydantic import Field

from searchvlm.schema import doc as schema_doc
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import Ratio
from searchvlm.schema.policy.schedules import (
    SCHEDULES,
    CosineSchedule,
    FastVSchedule,
    PerLayerSchedule,
    PyramidSchedule,
    Schedule,
    ShallowSchedule,
    TaskSpec,
    Tied,
    compile_policy,
    register_schedule,
)
from searchvlm.schema.space import load_space


class LinearSchedule(Schedule):
    """Linear ramp: keep `start` in the first layer, `end` in the last, linear in between."""

    kind: Literal["linear"] = "linear"
    start: Ratio = Field(1.0, description="keep ratio of the first layer")
    end: Ratio = Field(0.25, description="keep ratio of the last layer")

    def ratios(self, num_layers: int) -> list[float]:
        span = max(1, num_layers - 1)
        return [self.start + (self.end - self.start) * i / span for i in range(num_layers)]


@pytest.fixture
def linear():
    register_schedule(LinearSchedule)
    yield LinearSchedule
    SCHEDULES.pop("linear")


LINEAR_SPACE = """
model: {num_layers: 5}
policy:
  understanding:
    mode: [drop, skip]
    schedules:
      - {kind: linear, end: {type: float, low: 0.0, high: 0.5, step: 0.25}}
      - {kind: fastv, start: [1, 2]}
  generation:
    schedules: [{kind: linear, start: [1.0, 0.75], end: 0.5}]
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def test_a_new_kind_is_one_class(linear, tmp_path: Path) -> None:
    space = _load(tmp_path, LINEAR_SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        params = space.suggest(study.ask())
        policy = space.policy_from_params(params)
        if params["und.schedule"] == "linear":
            end = params["und.linear.end"]
            expected = [1.0 + (end - 1.0) * i / 4 for i in range(5)]  # the ramp, written out
            assert policy.understanding.keep == pytest.approx(expected)
            seen.add("und")
        start = params["gen.linear.start"]
        assert policy.generation.keep == pytest.approx([start + (0.5 - start) * i / 4 for i in range(5)])
    assert seen == {"und"}
    grid = space.grid_space()
    assert grid["und.linear.end"] == [0.0, 0.25, 0.5] and grid["gen.linear.start"] == [1.0, 0.75]
    assert "| `policy.understanding.schedules[kind=linear].end` | dist | `0.25` |" in schema_doc.space_reference()
    assert pickle.loads(pickle.dumps(space)) == space  # the sweep's searcher pickles its space


def test_shipped_space_pickles_with_its_generated_classes() -> None:
    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml")
    again = pickle.loads(pickle.dumps(space))
    assert again == space and type(again.policy.understanding.schedules[0]).__name__ == "FastVSpace"


def test_a_new_kind_gets_its_range_checks(linear, tmp_path: Path) -> None:
    bad = LINEAR_SPACE.replace("end: {type: float, low: 0.0, high: 0.5, step: 0.25}", "end: [0.5, 1.5], slope: 2")
    with pytest.raises(ConfigError, match=r"schedules\[0\]\.slope = 2: Extra inputs"):
        _load(tmp_path, bad)
    bad = LINEAR_SPACE.replace("end: {type: float, low: 0.0, high: 0.5, step: 0.25}", "end: [0.5, 1.5]")
    with pytest.raises(ConfigError, match=r"schedules\[0\]\.end = .*ratio values must lie in \[0, 1\]"):
        _load(tmp_path, bad)


def test_an_unregistered_kind_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, LINEAR_SPACE)
    assert "policy.understanding.schedules[0]" in str(err.value)
    assert "expected tags: 'fastv', 'pyramid', 'shallow', 'cosine', 'per_layer'" in str(err.value)
    with pytest.raises(ValueError, match="already registered"):
        register_schedule(type("Other", (FastVSchedule,), {"__doc__": "another fastv"}))


def test_declarations_are_read_from_the_fields() -> None:
    start, ratio = FastVSchedule.params()
    assert (start.role, start.type, start.limits(4), start.what) == ("number", int, (1, 3), "layer")
    assert (ratio.role, ratio.type, ratio.limits(4), ratio.what) == ("number", float, (0.0, 1.0), "ratio")
    bounds, _ = PyramidSchedule.params()
    assert bounds.role == "fixed" and bounds.limits(4) == (1, 3)
    (keep,) = PerLayerSchedule.params()
    assert (keep.role, keep.type, keep.step, keep.limits(8)) == ("per_layer", float, 0.25, (0.0, 1.0))
    k, _ = ShallowSchedule.params()
    assert k.limits(4) == (0, math.inf) and k.what == "count"
    assert [p.name for p in CosineSchedule.params()] == ["floor", "shift"]


@pytest.mark.parametrize(("schedule", "message"), [
    (FastVSchedule(start=5), "fastv.start = 5 must be < num_layers = 4"),
    (CosineSchedule(shift=4), "cosine.shift = 4 must be < num_layers = 4"),
    (PyramidSchedule(boundaries=[0, 2]), r"pyramid.boundaries value 0 must be in \[1, 3\]"),
    (PerLayerSchedule(keep=[1.0, 0.5]), "per_layer.keep has 2 entries but the model has 4 layers"),
])  # fmt: skip
def test_compile_checks_the_depth(schedule: Schedule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule.compile(4)


def test_specs_validate_by_kind_and_round_trip() -> None:
    spec = TaskSpec.model_validate({"schedule": {"kind": "pyramid", "ratio": 0.25}, "mode": "drop"})
    assert spec.schedule == PyramidSchedule(ratio=0.25)
    assert TaskSpec.model_validate_json(spec.model_dump_json()) == spec


def test_drop_is_clamped_and_tied_generation_runs_understandings_schedule() -> None:
    wavy = PerLayerSchedule(keep=[1.0, 0.5, 0.75, 0.25])
    assert TaskSpec(schedule=wavy, mode="drop").compile(4).keep == [1.0, 0.5, 0.5, 0.25]
    assert TaskSpec(schedule=wavy, mode="skip").compile(4).keep == [1.0, 0.5, 0.75, 0.25]
    und = TaskSpec(schedule=FastVSchedule(start=1), mode="query_drop")
    pol = compile_policy(4, und, Tied(selector="recent"))
    assert pol.tie_schedules and pol.generation.keep == pol.understanding.keep == [1.0, 0.5, 0.5, 0.5]
    assert (pol.generation.mode, pol.generation.selector) == ("query_drop", "recent")
    assert not compile_policy(4, und, TaskSpec()).tie_schedules
