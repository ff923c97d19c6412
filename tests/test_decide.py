"""Tests of searchvlm.records.decide on a hand-made sweep folder, raced for real on a tiny proxy.

The folder holds what a sweep leaves (sweep.json, the space copy, trials.csv with preset
policies and made-up search numbers), so the shortlist is known by hand: himix (FLOPs 0.6,
on the front) and pmod (0.9, within 2 standard errors of it); dense (1.0) is never raced
and fastv (0.8) is far behind.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import ROOT
from helpers.sweeps import TINY_DATA
from searchvlm.cli import app
from searchvlm.objectives.export import build_policy_file
from searchvlm.records.decide import RACE_FILE, DecideOptions, decide, shortlist
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import preset
from searchvlm.schema.results import DECISION_FILE, SweepMeta, read_trials, trial_row, write_meta, write_trials
from searchvlm.schema.space import load_space
from searchvlm.schema.trial_result import TrialResult

TABLE = [("dense", 1.0, 0.00), ("himix", 0.6, -0.05), ("pmod", 0.9, -0.06), ("fastv", 0.8, -0.30)]
#: a margin no tiny model misses: the race must accept both (the mechanics are under test here;
#: the statistics are tests/test_noninferiority.py's)
WIDE = DecideOptions(delta=1000.0, first_seeds=2, max_seeds=2, seeds=[1, 2])


def make_sweep(root: Path, name: str = "hand", status: str = "ok") -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["training"].update(steps=20, eval_every=10)
    data["data"].update(TINY_DATA)
    data["synergy"]["gen_metric"] = "nll"
    run = root / name
    run.mkdir(parents=True)
    (run / "space.yaml").write_text(yaml.safe_dump(data))
    digest = load_space(run / "space.yaml").space_hash()
    write_meta(run / "sweep.json", SweepMeta(name=name, space_path=str(run / "space.yaml"), space_hash=digest,
                                             package_version="0", model=data["model"]))  # fmt: skip
    rows = []
    for i, (p, f, s) in enumerate(TABLE):
        res = TrialResult(status=status, flops_ratio=f, synergy_gain=s, synergy_gain_stderr=0.01, seeds=[0, 3],
                          policy=preset(p, 4))  # fmt: skip
        rows.append(trial_row(res, f"t{i}", i, preset=p))
    write_trials(run / "trials.csv", rows)
    return run


def test_shortlist_is_the_cheapest_front_and_near_front_most_expensive_first(tmp_path: Path) -> None:
    rows = read_trials(make_sweep(tmp_path) / "trials.csv")
    assert [r.trial_id for r in shortlist(rows, 3, None)] == ["t2", "t1"]  # pmod 0.9, himix 0.6
    assert [r.trial_id for r in shortlist(rows, 1, None)] == ["t1"]  # the cheapest


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (DecideOptions(delta=0.0), r"--delta.*> 0"),
        (DecideOptions(delta=-0.1), r"--delta"),
        (DecideOptions(delta=0.04, alpha=0.5), r"--alpha.*\(0, 0.5\)"),
        (DecideOptions(delta=0.04, max_seeds=1), r"--max-seeds.*at least 2"),
        (DecideOptions(delta=0.04, first_seeds=6, max_seeds=4), r"--first-seeds = 6.*first_seeds"),
        (DecideOptions(), r"--delta.*no margin.*decision:"),
        (DecideOptions(delta=0.04, seeds=[0, 1]), r"--seeds.*trained the sweep itself"),
        (DecideOptions(delta=0.04, shortlist=0), r"--shortlist"),
    ],
)
def test_bad_settings_are_refused_before_any_training(tmp_path: Path, options: DecideOptions, match: str) -> None:
    run = make_sweep(tmp_path)
    with pytest.raises(ConfigError, match=match):
        decide(run, options)
    assert not (run / RACE_FILE).exists() and not (run / DECISION_FILE).exists()


def test_unknown_run_no_ok_trial_and_changed_space(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        decide("nope", WIDE, runs_dir=tmp_path)
    failed = make_sweep(tmp_path, "failed", status="failed")
    with pytest.raises(ConfigError, match="no trial finished ok"):
        decide(failed, WIDE)
    run = make_sweep(tmp_path)
    space = run / "space.yaml"
    space.write_text(space.read_text().replace("steps: 20", "steps: 21"))
    with pytest.raises(ConfigError, match="changed or damaged since the sweep"):
        decide(run, WIDE)


def test_cli_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    make_sweep(tmp_path / "runs")
    res = CliRunner().invoke(app, ["decide", "hand", "--runs-dir", str(tmp_path / "runs"), "--alpha", "0.7",
                                   "--delta", "0.04"])  # fmt: skip
    assert res.exit_code == 2
    assert "--alpha" in res.output and "Traceback" not in res.output


def test_export_by_decision_needs_an_accepted_decision(tmp_path: Path) -> None:
    run = make_sweep(tmp_path)
    with pytest.raises(ConfigError, match="no decision yet"):
        build_policy_file(run, rule="decision")
    (run / DECISION_FILE).write_text(json.dumps({"schema": "searchvlm.decision/v1", "verdict": "undetermined",
                                                 "line": "undetermined: ...", "accepted": None}))  # fmt: skip
    with pytest.raises(ConfigError, match="no policy was accepted"):
        build_policy_file(run, rule="decision")


class Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.multiprocess  # jobs=2: a process pool
def test_decide_races_for_real_resumes_and_exports(tmp_path: Path) -> None:
    run = make_sweep(tmp_path)
    events: list[str] = []

    def stop_after_first(text: str) -> None:
        events.append(text)
        if text.startswith("trial "):
            raise Interrupt  # as if killed right after the first seed's record was written

    parallel = dataclasses.replace(WIDE, jobs=2)  # the two seeds of a look in two processes
    with pytest.raises(Interrupt):
        decide(run, parallel, on_event=stop_after_first)
    first = json.loads((run / RACE_FILE).read_text())["records"]
    assert [(r["trial_id"], r["status"]) for r in first] == [("t2", "ok")]  # pmod first, one seed kept
    # every reference of both seeds was trained by its own job, queued before the candidate's seeds
    warmed = sorted(e.split(":")[0] for e in events[:-1])
    assert warmed == sorted(f"reference {what}, seed {s}" for what in ("dense joint", "generation alone",
                            "understanding alone") for s in (1, 2)), events  # fmt: skip
    assert all("trained in" in e for e in events[:-1])

    done = decide(run, parallel)
    assert done.trained == 3 and done.reused == 1  # the interrupted seed is not trained again
    assert done.result.verdict == "accepted" and done.accepted["trial_id"] == "t1"  # himix, the cheaper
    assert [t.name for t in done.result.tested] == ["t2", "t1"]
    assert all(t.seeds == 2 and t.state == "non_inferior" for t in done.result.tested)
    written = json.loads((run / DECISION_FILE).read_text())
    assert written["verdict"] == "accepted" and written["accepted"]["trial_id"] == "t1"
    records = json.loads((run / RACE_FILE).read_text())["records"]
    diffs = [r["synergy_vs_dense"] for r in sorted(records, key=lambda r: r["seed"]) if r["trial_id"] == "t1"]
    assert written["race"]["accepted"]["diffs"] == pytest.approx(diffs)

    again = decide(run, WIDE)  # the same command: nothing retrained, the same verdict
    assert again.trained == 0 and again.reused == 4
    assert again.line() == done.line()

    policy_file = build_policy_file(run, rule="decision")
    assert policy_file.provenance["trial_id"] == "t1" and policy_file.provenance["rule"] == "decision"
    assert policy_file.provenance["decision_seeds"] == 2
    assert policy_file.policy == preset("himix", 4).model_copy(update={"name": policy_file.policy.name})

    res = CliRunner().invoke(app, ["decide", str(run), "--delta", "1000", "--first-seeds", "2", "--max-seeds", "2",
                                   "--seeds", "1,2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "0 runs trained, 4 reused" in res.output and "accepted: trial t1 (himix, #1)" in res.output


@pytest.mark.slow
def test_decide_counts_confirms_records_on_its_seeds(tmp_path: Path) -> None:
    """A policy `confirm` already trained on the race's seeds is not trained again."""
    from searchvlm.schema.results import CONFIRMED_FILE, write_confirmed

    run = make_sweep(tmp_path)
    row = {"trial_id": "t2", "number": 2, "status": "ok", "seeds": "[1, 2]", "vs_dense_per_seed": "[0.01, -0.02]",
           "synergy_per_seed": "[0.1, 0.2]"}  # fmt: skip
    write_confirmed(run / CONFIRMED_FILE, [row])
    done = decide(run, WIDE)
    assert done.reused == 2 and done.trained == 2  # only himix (t1) was trained, on seeds 1 and 2
    assert done.result.tested[0].diffs == [0.01, -0.02]


def test_confirm_labels_rows_with_the_decision_verdict() -> None:
    from searchvlm.records.confirm import ConfirmSummary, _verdicts
    from searchvlm.schema.space import SearchSpace

    space = SearchSpace.model_validate({"decision": {"delta": 0.035}})
    rows = [{"trial_id": "a", "number": 1, "status": "ok", "flops_ratio": 0.5,
             "vs_dense_per_seed": "[0.01, 0.02, 0.0, 0.015, 0.005]"},
            {"trial_id": "b", "number": 2, "status": "ok", "flops_ratio": 0.4,
             "vs_dense_per_seed": "[-0.2, -0.21, -0.19, -0.2, -0.22]"}]  # fmt: skip
    summary = ConfirmSummary(Path("."), [1, 2, 3, 4, 5], rows)
    _verdicts(summary, space)
    assert summary.margin == (0.035, 0.05)
    assert {k: t.state for k, t in summary.verdicts.items()} == {"a": "non_inferior", "b": "inferior"}


def _recorded(run: Path, plan: dict, seeds: list[int]) -> None:
    """A race.json as decide writes it, every shortlisted candidate done on `seeds`."""
    recs = [{"trial_id": t, "seed": s, "status": "ok", "synergy_vs_dense": 0.001 * s + 0.01 * i}
            for i, t in enumerate(("t2", "t1")) for s in seeds]  # fmt: skip
    (run / RACE_FILE).write_text(json.dumps({"plan": plan, "records": recs}))


def test_a_race_is_rerun_only_as_planned(tmp_path: Path) -> None:
    """The plan (margin, alpha, looks, seeds, order) is fixed by the first run; a rerun with
    another plan on the same seeds is refused (its data were seen), on fresh seeds it is a
    new race; nothing is trained when every record is there."""
    run = make_sweep(tmp_path)
    plan = {"delta": 1000.0, "alpha": 0.05, "looks": [2], "seeds": [1, 2], "order": ["t2", "t1"]}
    _recorded(run, plan, [1, 2])
    done = decide(run, WIDE)
    assert done.trained == 0 and done.reused == 4 and done.result.verdict == "accepted"
    before = (run / RACE_FILE).read_text()
    with pytest.raises(ConfigError, match=r"race.json: plan = 'delta'.*planned with delta 1000.0.*fresh seeds"):
        decide(run, dataclasses.replace(WIDE, delta=500.0))
    with pytest.raises(ConfigError, match=r"plan = 'looks, seeds'"):
        decide(run, dataclasses.replace(WIDE, max_seeds=3, seeds=[1, 2, 3]))
    assert (run / RACE_FILE).read_text() == before  # nothing recorded is lost or rewritten
    fresh = {**plan, "delta": 500.0, "seeds": [7, 8]}
    recs = json.loads(before)["records"] + [{"trial_id": t, "seed": s, "status": "ok", "synergy_vs_dense": 0.0}
                                            for t in ("t2", "t1") for s in (7, 8)]  # fmt: skip
    (run / RACE_FILE).write_text(json.dumps({"plan": plan, "records": recs}))
    again = decide(run, dataclasses.replace(WIDE, delta=500.0, seeds=[7, 8]))  # a new race on fresh seeds
    assert again.trained == 0 and json.loads((run / RACE_FILE).read_text())["plan"] == fresh


def test_max_seeds_alone_fits_the_first_look_and_blames_the_flag_given(tmp_path: Path) -> None:
    from searchvlm.records.decide import _settings

    space = load_space(ROOT / "search_spaces" / "default.yaml")  # decision: first_seeds 5, max_seeds 10
    got = _settings(space, DecideOptions(max_seeds=3), Path("default.yaml"))
    assert (got.first_seeds, got.max_seeds, got.delta) == (3, 3, 0.035)
    with pytest.raises(ConfigError, match=r"--first-seeds = 12.*max_seeds \(10\) must be >= first_seeds \(12\)"):
        _settings(space, DecideOptions(first_seeds=12), Path("default.yaml"))
