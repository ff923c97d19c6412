"""Sweeps for the tests: tiny search spaces, finished sweep folders written directly, and the
check that a sweep's trials table, Optuna study and MLflow runs agree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml

from helpers import ROOT
from searchvlm.schema.policy import preset
from searchvlm.schema.results import SweepMeta, trial_row, write_meta, write_trials
from searchvlm.schema.trial_result import TrialResult

# --------------------------------------------------------------------------- tiny spaces


# a sixth of quick.yaml's images: the codebook fit and every evaluation round (caption accuracy
# scores each image under 11 captions) were most of a tiny trial's time. g_G on NLL: after 20
# steps a 32-image test set's caption accuracy can be 0 alone, and a relative gain over 0 is
# not a number to print (the caption metrics are still computed and recorded)
TINY_DATA = {"train_size": {"understanding": 200, "generation": 40}, "val_size": 32, "test_size": 32}


#: a 4-layer, 4-step digits space on two seeds: `reproduce`'s rows in seconds (tests/test_reproduce*.py)
TINY_REPRODUCE_SPACE = """
model: {num_layers: 4, hidden_size: 32, num_heads: 2, num_kv_heads: 1, intermediate_size: 64}
data: {name: digits, train_size: 48, val_size: 16, test_size: 16}
training: {steps: 4, batch_size: 8, eval_every: 2, threads: 1}
seeds: [0, 1]
policy:
  understanding: {mode: [skip], schedules: [{kind: cosine, floor: {type: float, low: 0.2, high: 1.0}}]}
  generation: {mode: [skip], schedules: [{kind: cosine, floor: {type: float, low: 0.2, high: 1.0}}]}
"""


def tiny_space(path: Path, samples: int = 4, steps: int = 20, concurrency: int = 2, scheduler: dict | None = None,
               presets: Sequence[str] = (), calibrated: bool = True) -> Path:  # fmt: skip
    """quick.yaml shrunk to seconds per trial (`steps` steps, evaluation every 10, TINY_DATA's
    set sizes), `presets` enqueued first; `calibrated=False` drops quick.yaml's calibration
    (measured for its training, not for these few steps: the sweep then warns that synergy
    is unmeasured)."""
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["training"].update(steps=steps, eval_every=10)
    data["data"].update(TINY_DATA)
    data["synergy"]["gen_metric"] = "nll"
    data["search"].update(samples=samples, concurrency=concurrency, scheduler=scheduler or {"kind": "none"})
    data["presets"] = list(presets)
    if not calibrated:
        data.pop("calibration", None)
    path.write_text(yaml.safe_dump(data))
    return path


def repeat_space(path: Path, samples: int = 4) -> Path:
    """Every sample is one computation: understanding keep 1 0 0 0 (fastv K=1, R=1) under
    `skip` or `drop` with any selector (merged, see searchvlm.schema.identity), the rest fixed."""
    data = yaml.safe_load(tiny_space(path, samples=samples, calibrated=False).read_text())
    data["policy"] = {
        "understanding": {"mode": ["skip", "drop"], "selector": ["stride", "attention"],
                          "schedules": [{"kind": "fastv", "start": 1, "ratio": 1.0}]},
        "generation": {"mode": ["skip"], "selector": ["stride"],
                       "schedules": [{"kind": "shallow", "k": 1, "ratio": 0.0}]},
        "tie_schedules": [False], "sharing": {"qkv": ["shared"], "mlp": ["shared"]},
    }  # fmt: skip
    data["search"]["confirm"] = {"seeds": [1, 2], "top": 2}
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- a finished sweep, written directly

# (preset, flops_ratio, synergy_gain): dense, a knee, the max-synergy point, a min-FLOPs one
TABLE: list[tuple[str, float, float]] = [
    ("dense", 1.0, 0.05),
    ("himix", 0.24, -0.10),
    ("hmgen", 0.5, 0.04),
    ("pmod", 0.8, 0.10),
    ("fastv", 0.6, 0.00),
]


def _result(name: str, flops: float, syn: float, num_layers: int) -> TrialResult:
    return TrialResult(
        flops_ratio=flops,
        synergy_gain=syn,
        synergy_gain_stderr=0.01,
        und_gain=syn,
        gen_gain=syn + 0.05,
        und_acc=0.7,
        gen_nll=2.5,
        und_acc_iso=0.68,
        gen_nll_iso=2.6,
        seeds=[0, 1],
        policy=preset(name, num_layers),
    )


def make_sweep(root: Path, name: str = "s1", num_layers: int = 4, table: list | None = None) -> Path:
    """A finished sweep directory: trials.csv (+ a failed and a pruned trial) and sweep.json."""
    run = root / name
    rows = [trial_row(_result(p, f, s, num_layers), f"t{i}", i, preset=p) for i, (p, f, s) in enumerate(table or TABLE)]
    n = len(rows)
    rows.append(trial_row(TrialResult(status="failed", error="OOM"), f"t{n}", n))
    rows.append(trial_row(TrialResult(status="pruned", flops_ratio=0.1, synergy_gain=0.9), f"t{n + 1}", n + 1))
    write_trials(run / "trials.csv", rows)
    meta = SweepMeta(
        name=name,
        space_path="search_spaces/tiny.yaml",
        space_hash="deadbeef",
        package_version="0.1.0",
        model={"num_layers": num_layers, "hidden_size": 32},
    )
    write_meta(run / "sweep.json", meta)
    return run


# --------------------------------------------------------------------------- a real sweep's records


def study(run_dir: Path, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'optuna.db'}")


def child_runs(uri: str, runs: Path, run_dir: Path) -> list:
    from searchvlm.schema.results import read_meta
    from searchvlm.tracking import Tracker

    tracker = Tracker(uri, runs)
    tracker.parent_id = read_meta(run_dir / "sweep.json").parent_run_id
    return tracker.children()


def check_consistent(run_dir: Path, name: str, uri: str, runs: Path, samples: int | None = None) -> list[dict]:
    """Every trial exactly once in the table, the study and MLflow, with matching states
    (and, given `samples`, trials numbered 0..samples-1)."""
    from searchvlm.schema.results import read_trials

    rows = read_trials(run_dir / "trials.csv")
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)), ids
    if samples is not None:
        assert len(rows) == samples, ids
        assert sorted(r["number"] for r in rows) == list(range(samples))
    st = study(run_dir, name)
    assert [d.name for d in st.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert sorted(t.number for t in st.trials) == sorted(r["number"] for r in rows)
    state = {"ok": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}
    by_number = {t.number: t for t in st.trials}
    for r in rows:
        assert by_number[r["number"]].state.name == state[r["status"]], r
    runs_ = child_runs(uri, runs, run_dir)
    assert sorted(c.data.tags["trial_id"] for c in runs_) == sorted(ids)
    assert {c.data.tags["trial_id"]: c.data.tags["status"] for c in runs_} == {r["trial_id"]: r["status"] for r in rows}
    assert all(c.info.status in ("FINISHED", "FAILED", "KILLED") for c in runs_)
    return rows


def rows_of(table: Path) -> list[dict]:
    from searchvlm.schema.results import read_trials

    try:
        return read_trials(table) if table.exists() else []
    except Exception:  # noqa: BLE001 - polled while a writer replaces it
        return []


# --------------------------------------------------------------------------- a finished sweep's whole folder


def recorded_sweep(root: Path, name: str = "rec") -> Path:
    """A finished sweep's folder as the driver leaves it, written without Ray or training
    (seconds): the space copy and sweep.json, trials.csv (`TABLE` plus a failed and a pruned
    trial), the Optuna study and the MLflow runs of every trial (same ids, numbers and
    states), Tune's `ray/tuner.pkl` (a placeholder pickle), confirmed.csv for one policy and
    one baseline cache entry. Returns `root/runs/name`."""
    from searchvlm.records.confirm import confirmed_row
    from searchvlm.schema.space import load_space
    from searchvlm.sweep._rundir import init_run_dir
    from searchvlm.tracking import Tracker, default_uri
    from searchvlm.train.baselines import RunRecord, _write

    space = tiny_space(root / "tiny.yaml", samples=len(TABLE) + 2, calibrated=False)
    runs, uri = root / "runs", default_uri(root / "runs")
    run = runs / name
    init_run_dir(run, space, load_space(space), name, uri)
    results = [_result(p, f, s, 4) for p, f, s in TABLE]
    results += [TrialResult(status="failed", error="OOM"), TrialResult(status="pruned", flops_ratio=0.1)]
    presets = [p for p, _, _ in TABLE] + [None, None]
    rows = [trial_row(r, f"abc_{i:05d}", i, preset=p) for i, (r, p) in enumerate(zip(results, presets))]
    write_trials(run / "trials.csv", rows)
    _record_study(run, name, rows)
    tracker = Tracker(uri, runs)
    parent = tracker.start_sweep(name, run / space.name, {"samples": len(rows)})
    for row, result in zip(rows, results):
        run_id = tracker.child(row["trial_id"], f"t{row['number']:04d}", {}, {"optuna_number": str(row["number"]),
                               "preset": row["preset"]})  # fmt: skip
        tracker.finish_trial(run_id, result, row["policy_json"] or None)
    tracker.end_sweep()
    from searchvlm.schema.results import read_meta, write_confirmed

    write_meta(run / "sweep.json", read_meta(run / "sweep.json").model_copy(update={"parent_run_id": parent}))
    (run / "ray").mkdir()
    (run / "ray" / "tuner.pkl").write_bytes(__import__("pickle").dumps({"placeholder": "tuner"}))
    write_confirmed(run / "confirmed.csv", [confirmed_row(rows[3], results[3], [1, 2, 3])])  # confirm's default
    (runs / "cache" / "baselines").mkdir(parents=True)
    _write(runs / "cache" / "baselines" / "k0.json", RunRecord(tasks=("understanding",), seed=0,
                                                                val={"und_acc": {10: 0.5}}))  # fmt: skip
    return run


def _record_study(run: Path, name: str, rows: list[dict]) -> None:
    """The sweep's Optuna study: one trial per row with its trial id, state and values."""
    from optuna.trial import TrialState

    from searchvlm.sweep._keys import PRESET_ATTR, TRIAL_ID_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name=name, storage=f"sqlite:///{run / 'optuna.db'}",
                             directions=["minimize", "maximize"])  # fmt: skip
    state = {"ok": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
    for row in rows:
        trial = st.ask()
        trial.set_user_attr(TRIAL_ID_ATTR, row["trial_id"])
        if row["preset"]:
            trial.set_user_attr(PRESET_ATTR, row["preset"])
        values = [row["flops_ratio"], row["synergy_gain"]] if row["status"] == "ok" else None
        st.tell(trial, values, state=state[row["status"]])
