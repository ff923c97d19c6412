"""Pinned outputs that files and numbers depend on: each shipped space's `space_hash`
(provenance of exported policies), the flat parameter names and compiled policies of seeded
sampled points (trials.csv, MLflow params, Optuna studies), a grid, and every preset's
compiled policy at 4, 8 and 16 layers (reproduce, benchmarks). A change here changes a file
format or a number: update a pin only on purpose (a failure prints the new value)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import pytest

from searchvlm.schema.policy.presets import PRESETS, preset
from searchvlm.schema.space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parents[1]

#: space -> (space_hash, digest of 40 seeded points: params and compiled policy)
SPACES = {
    "default": ("40954cb59585ac67", "a4498b69e9b04ecf"),  # patch-token shapes (issue 20), decision: (33)
    "gpu": ("f4b31f1331364066", "7aef69e31dcd52f3"),  # concurrency auto, one GPU per trial
    "paper": ("9324c732c709dcea", "501dd656a24475cf"),
    "quick": ("9ebdd399234d1295", "21235942ed8fc87d"),  # QUICK_PLAN2.md (issue 23): 100 steps, 16 trials
}
#: digest of the preset's compiled policies at 4, 8 and 16 layers
PRESET_DIGESTS = {
    "dense": "522401f783813302",
    "fastv": "23a63d25965469aa",
    "pyramiddrop": "d2a7a6f5ba201790",
    "himix": "a87d8d7156477b3e",
    "hmgen": "2589f94e95a51ecb",
    "hmgen5": "5a9fa6a68e21a585",
    "himix_hmgen": "6dbffc9b5f038cf2",  # issue 35: share all keeps HMGen's image/text q/k/v split
    "himix_hmgen_partial": "734c06267f69ff88",  # issue 35: image q/k/v per task in HMGen's full layers
    "pmod": "8d404c987b464982",
    "tied": "10eece14a9112628",
}
# every schedule kind, fixed pyramid boundaries, drop on a per-layer schedule (clamped)
EVERY_KIND = """
model: {num_layers: 6}
policy:
  understanding:
    mode: [drop, skip]
    selector: [stride, attention]
    schedules:
      - {kind: per_layer, keep: {type: float, low: 0.0, high: 1.0, step: 0.25}}
      - {kind: pyramid, ratio: [0.25, 0.5], boundaries: [2, 4]}
      - {kind: fastv, start: {type: int, low: 1, high: 5}, ratio: {type: float, low: 0.1, high: 0.9}}
  generation:
    mode: [skip, query_drop]
    selector: [recent, router]
    schedules:
      - {kind: per_layer}
      - {kind: shallow, k: [1, 2], ratio: {type: float, low: 0.0, high: 0.5}}
      - {kind: cosine, floor: {type: float, low: 0.1, high: 1.0, log: true}, shift: [0, 1]}
  tie_schedules: [false, true]
  sharing: {qkv: [shared, modality, task_image], mlp: [shared, task]}
"""
EVERY_KIND_PINS = ("a34136302392d775", "25d64da82d3105a1")
EVERY_KIND_NAMES = [
    "gen.cosine.floor", "gen.cosine.shift", "gen.mode", *(f"gen.per_layer.keep.{i}" for i in range(6)),
    "gen.schedule", "gen.selector", "gen.shallow.k", "gen.shallow.ratio", "sharing.mlp", "sharing.qkv",
    "tie_schedules", "tied.mode", "und.fastv.ratio", "und.fastv.start", "und.mode",
    *(f"und.per_layer.keep.{i}" for i in range(6)), "und.pyramid.ratio", "und.schedule", "und.selector",
]  # fmt: skip
#: (space_hash, digest of grid_space items) of EVERY_KIND made finite
GRID_PINS = ("5901d8b252d7cdb0", "8f3fd7330d922936")


def _digest(obj: object, sort_keys: bool = True) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=sort_keys).encode()).hexdigest()[:16]


def _points(space: SearchSpace, n: int = 40) -> tuple[str, set[str]]:
    """Digest of n points of a seeded random sampler, and every parameter name seen."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    points, names = [], set()
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        names |= set(params)
        points.append([params, space.policy_from_params(params).model_dump(mode="json")])
        study.tell(trial, [0.5, 0.0])
    return _digest(points), names


@pytest.mark.parametrize("stem", sorted(SPACES))
def test_shipped_spaces_hash_and_sample_as_pinned(stem: str) -> None:
    space = load_space(ROOT / "search_spaces" / f"{stem}.yaml")
    assert (space.space_hash(), _points(space)[0]) == SPACES[stem]


def test_every_kind_samples_as_pinned(tmp_path: Path) -> None:
    path = tmp_path / "every_kind.yaml"
    path.write_text(EVERY_KIND)
    space = load_space(path)
    digest, names = _points(space)
    assert (space.space_hash(), digest) == EVERY_KIND_PINS
    assert sorted(names) == EVERY_KIND_NAMES


def test_grid_as_pinned(tmp_path: Path) -> None:
    text = (EVERY_KIND.replace("high: 0.9}", "high: 0.9, step: 0.2}")
            .replace("{type: float, low: 0.0, high: 0.5}", "0.25")
            .replace("{type: float, low: 0.1, high: 1.0, log: true}", "[0.2, 0.6]"))  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    space = load_space(path)
    assert (space.space_hash(), _digest(list(space.grid_space().items()), sort_keys=False)) == GRID_PINS


def test_presets_compile_as_pinned() -> None:
    assert tuple(PRESET_DIGESTS) == PRESETS
    got = {n: _digest([preset(n, L).model_dump(mode="json") for L in (4, 8, 16)]) for n in PRESETS}
    assert got == PRESET_DIGESTS


def test_result_columns_as_pinned() -> None:
    """trials.csv's header and the metric groups derived from TrialResult's `Reached` marks."""
    from searchvlm.schema.results import TRIAL_COLUMNS
    from searchvlm.schema.trial_result import ROUND_METRICS, SEARCHABLE_METRICS, SEED_MEANS, SEED_STDERRS

    assert TRIAL_COLUMNS == (
        "trial_id", "number", "status", "error", "preset", "duplicate_of", "flops_ratio", "synergy_gain",
        "synergy_gain_stderr", "und_gain", "und_gain_stderr", "gen_gain", "gen_gain_stderr", "synergy_vs_dense",
        "synergy_vs_dense_stderr", "und_gain_vs_dense", "gen_gain_vs_dense", "und_acc", "und_acc_test_se",
        "gen_nll", "gen_nll_test_se", "gen_fidelity", "gen_caption_acc", "gen_caption_nats", "und_acc_iso",
        "gen_nll_iso", "gen_fidelity_iso", "gen_caption_acc_iso", "gen_caption_nats_iso", "gen_gain_below_chance",
        "train_seconds",
        "steps_done", "seeds", "synergy_per_seed", "policy_json", "params_json", "start_time", "end_time",
        "node", "gpu_ids", "device", "cpu",
    )  # fmt: skip
    assert set(SEARCHABLE_METRICS) == {"flops_ratio", "synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll",
                                       "gen_fidelity", "gen_caption_acc", "gen_caption_nats",
                                       "synergy_gain_stderr", "synergy_vs_dense",
                                       "und_gain_vs_dense", "gen_gain_vs_dense"}  # fmt: skip
    assert ROUND_METRICS == ("flops_ratio", "synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll")
    assert set(SEED_MEANS) == {"synergy_gain", "und_gain", "gen_gain", "synergy_vs_dense", "und_gain_vs_dense",
                               "gen_gain_vs_dense", "und_acc", "und_acc_test_se", "gen_nll", "gen_nll_test_se",
                               "und_acc_iso", "gen_nll_iso", "gen_fidelity", "gen_fidelity_iso", "gen_caption_acc",
                               "gen_caption_nats", "gen_caption_acc_iso", "gen_caption_nats_iso",
                               "gen_gain_below_chance"}  # fmt: skip
    assert SEED_STDERRS == ("synergy_gain", "und_gain", "gen_gain", "synergy_vs_dense")
