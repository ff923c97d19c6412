"""Search-space schema: shipped spaces load, errors name file + key path, params compile."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from searchvlm.schema.errors import ConfigError
from searchvlm.schema.file_checks import validate_file
from searchvlm.schema.policy import PRESETS
from searchvlm.schema.space import Constraint, load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def test_shipped_spaces_present():
    assert {p.stem for p in SPACES} >= {"quick", "default", "paper", "gpu"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_shipped_space_loads_and_samples(path: Path):
    space = load_space(path)
    assert "valid search space" in validate_file(path)
    assert all(p in PRESETS for p in space.presets)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dirs = [{"min": "minimize", "max": "maximize"}[d] for d in space.directions]
    study = optuna.create_study(directions=dirs, sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(40):
        trial = study.ask()
        policy = space.policy_from_params(space.suggest(trial))
        assert policy.num_layers == space.model.num_layers
        cfg = space.trial_config(policy, f"t{i}", cache_dir="runs/cache")
        assert Path(cfg.cache_dir).is_absolute() and cfg.policy == policy
        study.tell(trial, [0.5, 0.0])
    assert len(space.space_hash()) == 16


def _bad(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(p)
    assert str(p) in str(err.value)
    return str(err.value)


def test_errors_name_every_key(tmp_path: Path):
    msg = _bad(
        tmp_path,
        """
model: {num_layers: 4, hidden_sizee: 32}
policy:
  understanding:
    schedules:
      - {kind: fastv, ratio: {type: float, low: 0.9, high: 0.2}}
      - {kind: foo}
search: {sampler: bayes}
constraints: ["und_acc >= 0.5", "__import__('os') > 1"]
presets: [nope]
""",
    )
    for key in ("model.hidden_sizee", "policy.understanding.schedules[0].ratio",
                "policy.understanding.schedules[1]", "search.sampler", "constraints[1]", "presets[0]"):  # fmt: skip
        assert key in msg, key
    assert "'gp'" in msg  # says what would be valid


def test_cross_checks_against_model_depth(tmp_path: Path):
    msg = _bad(
        tmp_path,
        """
model: {num_layers: 4}
policy:
  understanding:
    schedules: [{kind: fastv, start: {type: int, low: 1, high: 9}}]
search: {scheduler: {kind: mo_asha, grace_steps: 600}}
""",
    )
    assert "policy.understanding.schedules[0].start" in msg and "num_layers = 4" in msg
    assert "search.scheduler.grace_steps" in msg


def test_generation_drop_rejected(tmp_path: Path):
    assert "policy.generation" in _bad(tmp_path, "policy: {generation: {mode: [drop, skip]}}\n")


def test_params_compile_drop_clamped_monotone():
    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    params = {"tie_schedules": False, "und.mode": "drop", "und.selector": "stride",
              "und.schedule": "cosine", "und.cosine.floor": 0.2, "und.cosine.shift": 0,
              "gen.mode": "skip", "gen.selector": "recent", "gen.schedule": "shallow",
              "gen.shallow.k": 1, "gen.shallow.ratio": 0.0, "sharing.qkv": "task_image",
              "sharing.mlp": "shared"}  # fmt: skip
    pol = space.policy_from_params(params)
    keep = pol.understanding.keep
    assert keep == sorted(keep, reverse=True) and keep[-1] == pytest.approx(0.2)
    assert pol.generation.keep == [1.0, 0.0, 1.0, 1.0] and pol.sharing.qkv == "task_image"


def test_tied_uses_one_schedule():
    space = load_space(ROOT / "search_spaces" / "quick.yaml")
    params = {"tie_schedules": True, "tied.mode": "skip", "und.selector": "stride",
              "und.schedule": "fastv", "und.fastv.start": 1, "und.fastv.ratio": 0.5,
              "gen.selector": "recent", "sharing.qkv": "shared", "sharing.mlp": "shared"}  # fmt: skip
    pol = space.policy_from_params(params)
    assert pol.tie_schedules and pol.understanding.keep == pol.generation.keep == [1.0, 0.5, 0.5, 0.5]
    assert pol.generation.selector == "recent"


def test_constraint_parsing_is_not_eval():
    c = Constraint.parse("und_acc >= 0.5")
    assert c.violation({"und_acc": 0.7}) < 0 < c.violation({"und_acc": 0.3})
    assert Constraint.parse("flops_ratio <= 0.6").violation({"flops_ratio": 0.5}) < 0
    with pytest.raises(ValueError):
        Constraint.parse("und_acc >= 0.5 or 1")


def test_validate_policy_json(tmp_path: Path):
    from searchvlm.schema.policy import preset

    p = tmp_path / "p.json"
    p.write_text(preset("himix", 4).to_json())
    assert "valid policy" in validate_file(p)
    p.write_text('{"num_layers": 2, "understanding": {"keep": [1.0]}, "generation": {"keep": [1, 1], "mode": "drop"}}')
    with pytest.raises(ConfigError):
        validate_file(p)


def test_a_sweep_is_warned_when_the_proxy_shows_no_dense_synergy(tmp_path) -> None:
    from searchvlm.schema.space import ProxyCalibration, SearchSpace

    space = SearchSpace()
    assert "unmeasured" in space.synergy_warning()
    bad = ProxyCalibration(seeds=5, und_gain=(-0.19, 0.06), gen_gain=(0.03, 0.01))
    assert "does not beat" in space.model_copy(update={"calibration": bad}).synergy_warning()
    weak = ProxyCalibration(seeds=5, und_gain=(0.10, 0.02), gen_gain=(0.03, 0.02))  # g_G within 2 s.e.
    assert weak.shows_synergy() is False
    good = ProxyCalibration(seeds=5, und_gain=(0.10, 0.02), gen_gain=(0.05, 0.02))
    assert space.model_copy(update={"calibration": good}).synergy_warning() is None


def test_an_error_on_a_list_of_files_names_each_of_them(tmp_path: Path) -> None:
    files = [str(tmp_path / "a" / "deep" / "folder" / f"run-{i}" / "trials.jsonl") for i in range(3)]
    assert len(repr(files)) > 80
    text = str(ConfigError("command line", "--runs", files, "damaged"))
    assert all(f in text for f in files)
    assert "..." in str(ConfigError("command line", "--seeds", list(range(100)), "too many"))  # other values cut
