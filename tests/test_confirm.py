"""Tests of searchvlm.records.confirm on a hand-made sweep folder, trained for real on a tiny proxy.

The folder holds what a sweep leaves (sweep.json, the space copy, trials.csv with preset
policies and made-up search numbers), so the front and near-front are known by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from searchvlm.objectives.export import build_policy_file
from searchvlm.records.confirm import run_confirm
from searchvlm.report import pareto_summary
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import preset
from searchvlm.schema.results import (
    CONFIRMED_FILE,
    SweepMeta,
    TrialRun,
    read_confirmed,
    trial_row,
    write_meta,
    write_trials,
)
from searchvlm.schema.space import load_space
from searchvlm.schema.trial_result import TrialResult

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1, 2]
# (preset, flops, synergy, stderr): himix and dense on the front, pmod 1 s.e. behind
# himix (near-front), fastv far behind (not confirmed), t4 a repeat of himix
TABLE = [("dense", 1.0, 0.00), ("himix", 0.6, -0.05), ("pmod", 0.9, -0.06), ("fastv", 0.8, -0.30)]


def make_sweep(root: Path, name: str = "hand") -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["training"].update(steps=20, eval_every=10)
    data["data"].update(train_size=64, val_size=32, test_size=64)
    run = root / name
    run.mkdir(parents=True)
    (run / "space.yaml").write_text(yaml.safe_dump(data))
    digest = load_space(run / "space.yaml").space_hash()  # what a sweep records (confirm checks it)
    write_meta(run / "sweep.json", SweepMeta(name=name, space_path=str(run / "space.yaml"), space_hash=digest,
                                             package_version="0", model=data["model"]))  # fmt: skip
    rows = []
    for i, (p, f, s) in enumerate(TABLE):
        res = TrialResult(status="ok", flops_ratio=f, synergy_gain=s, synergy_gain_stderr=0.01, seeds=[0, 3],
                          policy=preset(p, 4))  # fmt: skip
        rows.append(trial_row(res, f"t{i}", i, preset=p))
    twin = TrialResult(status="ok", flops_ratio=0.6, synergy_gain=-0.05, synergy_gain_stderr=0.01, seeds=[0, 3],
                       policy=preset("himix", 4))  # fmt: skip
    rows.append(trial_row(twin, "t4", 4, run=TrialRun(duplicate_of="t1")))
    write_trials(run / "trials.csv", rows)
    return run


class Interrupt(Exception):
    pass


def test_seeds_must_be_fresh_and_match_earlier_rows(tmp_path: Path) -> None:
    run = make_sweep(tmp_path)
    with pytest.raises(ConfigError, match=r"--seeds.*trained the sweep itself"):
        run_confirm(run, seeds=[0, 5])
    (run / CONFIRMED_FILE).write_text('trial_id,number,status,seeds,synergy_gain\nt1,1,ok,"[7, 8]",0.1\n')
    with pytest.raises(ConfigError, match=r"confirmed.csv.*other seeds than \[1, 2\].*--seeds 7,8"):
        run_confirm(run, seeds=SEEDS)


@pytest.mark.slow
def test_confirm_interrupted_resumes_and_export_uses_it(tmp_path: Path) -> None:
    run = make_sweep(tmp_path)
    written: list[str] = []

    def stop_after_first(row: dict) -> None:
        written.append(row["trial_id"])
        raise Interrupt  # as if killed right after the first row was written

    with pytest.raises(Interrupt):
        run_confirm(run, seeds=SEEDS, on_row=stop_after_first)
    first = read_confirmed(run / CONFIRMED_FILE)
    assert [r["trial_id"] for r in first] == written == ["t1"]  # the front's cheapest first

    result = CliRunner().invoke(_app(), ["confirm", str(run), "--seeds", "1,2"])
    assert result.exit_code == 0, result.output
    assert "shrinkage" in result.output and "1 already confirmed" in result.output
    rows = read_confirmed(run / CONFIRMED_FILE)
    assert sorted(r["trial_id"] for r in rows) == ["t0", "t1", "t2"]  # front + near-front, each once
    assert next(r for r in rows if r["trial_id"] == "t1") == first[0]  # not retrained
    for r in rows:
        assert r["status"] == "ok" and json.loads(r["seeds"]) == SEEDS
        per_seed = json.loads(r["synergy_per_seed"])
        vs_dense = json.loads(r["vs_dense_per_seed"])
        assert len(per_seed) == len(vs_dense) == 2
        assert r["synergy_gain"] == pytest.approx(sum(per_seed) / 2)
        assert r["synergy_vs_dense"] == pytest.approx(sum(vs_dense) / 2)
        assert r["synergy_vs_dense_stderr"] is not None
        assert r["shrinkage"] == pytest.approx(r["synergy_gain"] - r["search_synergy_gain"])
    dense = next(r for r in rows if r["trial_id"] == "t0")
    assert json.loads(dense["vs_dense_per_seed"]) == [0.0, 0.0]  # dense against itself, paired by seed

    again = run_confirm(run, seeds=SEEDS)  # complete: nothing repeated
    assert again.trained == [] and sorted(again.skipped) == ["t0", "t1", "t2"]

    pf = build_policy_file(run, rule="max-synergy")
    best = max(rows, key=lambda r: (r["synergy_gain"], -r["flops_ratio"]))
    assert pf.provenance["trial_id"] == best["trial_id"] and pf.provenance["numbers"] == "confirmed"
    assert pf.provenance["confirmed_seeds"] == "1,2" and pf.objectives["synergy_gain"] == best["synergy_gain"]
    summary = pareto_summary(run)
    assert summary["numbers"] == "confirmed" and summary["confirmed_seeds"] == SEEDS
    assert {r["trial_id"] for r in summary["front"]} <= {"t0", "t1", "t2"}
    assert all(r["confirmed"] and r["synergy_gain_stderr"] is not None for r in summary["front"])


def _app():
    from searchvlm.cli import app

    return app
