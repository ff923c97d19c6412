"""Tests of searchvlm.objectives.export: rules on a fixed trials table, atomic writes, load-time refusals."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.sweeps import make_sweep
from searchvlm.objectives.export import TrialChoice, build_policy_file, export_policy
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import POLICY_SCHEMA, load_policy, preset
from searchvlm.schema.results import write_trials


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """helpers.sweeps.TABLE: dense, a knee (hmgen), the max-synergy point (pmod), a min-FLOPs one (himix)."""
    return make_sweep(tmp_path / "runs")


@pytest.mark.parametrize(
    ("rule", "kwargs", "trial", "name"),
    [
        ("knee", {}, "t2", "hmgen"),
        ("max-synergy", {}, "t3", "pmod"),
        ("min-flops", {}, "t1", "himix"),
        ("max-synergy", {"max_flops": 0.7}, "t2", "hmgen"),
        ("min-flops", {"min_synergy": 0.0}, "t2", "hmgen"),
    ],
)
def test_export_rules(run: Path, tmp_path: Path, rule: str, kwargs: dict, trial: str, name: str) -> None:
    out = export_policy(run, TrialChoice(rule, **kwargs), out_path=tmp_path / "out" / "policy.json")
    data = json.loads(out.read_text())
    assert set(data) == {"schema", "policy", "model", "objectives", "provenance"}
    assert data["schema"] == POLICY_SCHEMA
    assert data["provenance"]["trial_id"] == trial
    assert data["provenance"]["sweep"] == "s1"
    assert data["provenance"]["space_hash"] == "deadbeef"
    assert data["provenance"]["package_version"] == "0.1.0"
    assert data["provenance"]["rule"] == rule
    assert data["model"] == {"num_layers": 4, "hidden_size": 32}
    obj = data["objectives"]
    assert obj["synergy_gain_stderr"] == 0.01 and obj["und_acc"] == 0.7 and obj["gen_nll"] == 2.5
    assert set(obj) >= {"flops_ratio", "synergy_gain", "und_gain", "gen_gain", "und_acc", "gen_nll"}
    policy = load_policy(out, num_layers=4)
    assert policy == preset(name, 4)  # the explicit policy round-trips exactly


def test_export_by_sweep_name(run: Path, tmp_path: Path) -> None:
    out = export_policy("s1", TrialChoice("knee"), out_path=tmp_path / "p.json", runs_dir=run.parent)
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "t2"


def test_export_infeasible_names_closest(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        export_policy(run, TrialChoice("knee", max_flops=0.1), out_path=tmp_path / "p.json")
    text = str(err.value)
    assert str(run / "trials.csv") in text and "--max-flops = 0.1" in text
    assert "closest is trial t1" in text  # pruned t6 (0.1, 0.9) is never a candidate
    assert not (tmp_path / "p.json").exists()


def test_export_refuses_missing_policy_and_layers(tmp_path: Path) -> None:
    run = make_sweep(tmp_path, table=[("dense", 0.9, 0.1)])
    text = (run / "trials.csv").read_text()
    policy_json = preset("dense", 4).model_dump_json()
    (run / "trials.csv").write_text(text.replace(policy_json.replace('"', '""'), ""))
    with pytest.raises(ConfigError, match=r"trial t0\.policy_json.*no policy recorded"):
        export_policy(run, TrialChoice("knee"), out_path=tmp_path / "p.json")
    run2 = make_sweep(tmp_path, name="s2")
    meta = json.loads((run2 / "sweep.json").read_text())
    meta["model"].pop("num_layers")
    (run2 / "sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"sweep\.json: model\.num_layers = None"):
        export_policy(run2, TrialChoice("knee"), out_path=tmp_path / "p.json")


def test_export_is_atomic(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "p.json"
    out.write_text("previous")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):  # force: replacing is asked for, and fails
        export_policy(run, TrialChoice("knee"), out_path=out, force=True)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "runs"]  # no temp left


def _edited(tmp_path: Path, data: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> Path:
    bad = copy.deepcopy(data)
    edit(bad)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(bad))
    return path


def _set_gen_drop(d: dict[str, Any]) -> None:
    d["policy"]["generation"]["mode"] = "drop"
    d["policy"]["generation"]["keep"] = [1.0, 0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda d: d.__setitem__("schema", "searchvlm.policy/v9"),
            r"schema = 'searchvlm.policy/v9'",
        ),
        (
            lambda d: d["policy"]["understanding"]["keep"].__setitem__(0, 1.5),
            r"policy\.understanding\.keep\[0\] = 1\.5",
        ),
        (
            lambda d: d["model"].__setitem__("num_layers", 6),
            r"model\.num_layers.*= 6 but policy\.num_layers = 4",
        ),
        (
            lambda d: d["policy"]["understanding"].__setitem__("keep", [1.0] * 3),
            r"understanding\.keep has 3 entries",
        ),
        (lambda d: d.__setitem__("extra_key", 1), r"extra_key = 1: Extra inputs are not permitted"),
        (lambda d: d["policy"]["sharing"].__setitem__("qvk", "shared"), r"policy\.sharing\.qvk"),
        (_set_gen_drop, r"generation\.mode = 'drop' is invalid"),
    ],
    ids=[
        "schema",
        "keep-1.5",
        "model-layers",
        "keep-length",
        "unknown-key",
        "unknown-nested",
        "gen-drop",
    ],
)
def test_edited_export_is_refused(run: Path, tmp_path: Path, edit: Callable, named: str) -> None:
    out = export_policy(run, TrialChoice("knee"), out_path=tmp_path / "p.json")
    path = _edited(tmp_path, json.loads(out.read_text()), edit)
    with pytest.raises(ConfigError, match=named) as err:
        load_policy(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("trial", "trial_id", "name"),
    [("t4", "t4", "fastv"), ("4", "t4", "fastv"), (4, "t4", "fastv"), ("#0", "t0", "dense"),
     ("t0003", "t3", "pmod"), ("t0003-pmod", "t3", "pmod"), ("t0003-pmod (t3)", "t3", "pmod"),
     ("t0004 (t4)", "t4", "fastv")],
)  # fmt: skip
def test_export_chosen_trial(run: Path, tmp_path: Path, trial: str | int, trial_id: str, name: str) -> None:
    """`--trial`: a trial id first, else a number (`4`, `#4`, `t0004`, `t0004-preset`, or the
    MLflow run name `t0004-preset (<trial id>)`); even
    a dominated trial (t4, fastv) that no rule would pick."""
    out = export_policy(run, TrialChoice("knee", trial=trial), out_path=tmp_path / "p.json")
    data = json.loads(out.read_text())
    assert data["provenance"]["trial_id"] == trial_id and data["provenance"]["rule"] is None
    assert load_policy(out) == preset(name, 4)


def test_export_chosen_trial_refusals(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    no_trial = r"trials\.csv: --trial = 'x9': no trial with this id or number \(numbers 0\.\.6\)"
    with pytest.raises(ConfigError, match=no_trial):
        export_policy(run, TrialChoice(trial="x9"), out_path=out)
    with pytest.raises(ConfigError, match=r"--trial = 5: trial t5 \(number 5\) has status 'failed' \(OOM\)"):
        export_policy(run, TrialChoice(trial=5), out_path=out)
    with pytest.raises(ConfigError, match=r"^command line: --trial = 't2': names the trial itself"):
        export_policy(run, TrialChoice(trial="t2", max_flops=0.5), out_path=out)
    assert not out.exists()


def test_export_never_overwrites_without_force(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    out.write_text("mine")
    with pytest.raises(ConfigError) as err:
        export_policy(run, TrialChoice("knee"), out_path=out)
    assert str(err.value) == (
        f"command line: --output = {str(out)!r}: exists; pass --force to overwrite it, or choose another file"
    )
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "runs"]
    export_policy(run, TrialChoice("knee"), out_path=out, force=True)
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "t2"


def test_write_never_replaces_a_file_that_appears_meanwhile(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The existence check comes first, but the final move itself never replaces a file."""
    import tempfile

    from searchvlm.objectives.export import write_policy_file

    out = tmp_path / "p.json"
    pf = build_policy_file(run)
    real = tempfile.mkstemp

    def racing_mkstemp(**kw: Any) -> tuple[int, str]:
        out.write_text("written by someone else")  # after the check, before the move
        return real(**kw)

    monkeypatch.setattr(tempfile, "mkstemp", racing_mkstemp)
    with pytest.raises(ConfigError, match="exists; pass --force"):
        write_policy_file(pf, out)
    assert out.read_text() == "written by someone else"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "runs"]  # no temp left


def test_unknown_rule_is_an_argument_error(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        export_policy(run, TrialChoice("kne"), out_path=tmp_path / "p.json")
    assert str(err.value).startswith("command line: --rule = 'kne': must be one of knee, max-synergy, min-flops")


def test_build_policy_file_keeps_preset_name(run: Path) -> None:
    pf = build_policy_file(run, "min-flops")
    assert pf.policy.name == "himix" and pf.provenance["preset"] == "himix"


def test_design_user_lines_on_tiny_llama(tmp_path: Path) -> None:
    """The README's three user lines on an exported policy and a tiny HF Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchvlm import apply_policy  # the public name the README's lines use

    run = make_sweep(tmp_path, num_layers=2, table=[("dense", 1.0, 0.2), ("himix", 0.4, 0.1)])
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    hf_model = LlamaForCausalLM(cfg).eval()
    input_ids = torch.randint(0, 99, (2, 12))  # (B, T)
    segments = torch.tensor([[0, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3]] * 2)  # (B, T)
    for rule in ("max-synergy", "min-flops"):
        path = export_policy(run, TrialChoice(rule), out_path=tmp_path / f"{rule}.json")
        policy = load_policy(path)
        reduced = apply_policy(hf_model, policy)
        with torch.no_grad():
            out = reduced(input_ids, segments=segments, task="understanding")
        assert out.logits.shape[0] == 2 and out.logits.shape[-1] == 99
        assert out.positions.shape == out.logits.shape[:2]
        assert torch.isfinite(out.logits).all()
        if policy.is_dense:
            with torch.no_grad():
                ref = hf_model(input_ids).logits
            torch.testing.assert_close(out.logits, ref, rtol=1e-4, atol=1e-4)


def test_repeats_are_one_point_on_the_front(tmp_path: Path) -> None:
    """A `duplicate_of` row is its twin's policy and result: ranked once, still exportable."""
    from searchvlm.schema.results import read_trials

    run = make_sweep(tmp_path / "runs")
    rows = read_trials(run / "trials.csv")
    twin = next(r for r in rows if r["trial_id"] == "t2")
    rows.append({**twin, "trial_id": "t9", "number": 9, "duplicate_of": "t2", "train_seconds": 0.0})
    write_trials(run / "trials.csv", rows)
    from searchvlm.report import pareto_summary

    assert [r["trial_id"] for r in pareto_summary(run)["front"]] == ["t1", "t2", "t3"]
    assert build_policy_file(run, rule="knee").provenance["trial_id"] == "t2"
    assert build_policy_file(run, trial="t9").provenance["trial_id"] == "t9"
