"""Results as data: a sweep's trials as a pandas DataFrame and its Pareto front, for notebooks.

Reads `runs/<sweep>/trials.csv` (the `results` contract) through the same readers and
Pareto logic as `searchvlm pareto`, so the numbers are the CLI's. pandas is imported
inside the functions (it is heavy): `import searchvlm` stays light.

    from searchvlm import load_trials, load_front
    df = load_trials("quick")                     # one row per trial, failed and pruned kept
    df[df.status == "ok"].plot.scatter("flops_ratio", "synergy_gain")
    front = load_front("quick")                   # shows as a table in a notebook
    front.knee, front.hypervolume, front.trials   # the front rows are a DataFrame too
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchvlm.schema.results import (
    METRIC_COLUMNS,
    PLACEMENT_COLUMNS,
    TRIALS_FILE,
    load_ranked,
    ranking_rows,
    read_trials,
    resolve_run_dir,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FRONT_COLUMNS", "Front", "load_front", "load_trials"]

#: the columns a Front shows (notebook and `repr`)
FRONT_COLUMNS = ("number", "trial_id", "preset", "flops_ratio", "synergy_gain", "synergy_gain_stderr",
                 "und_gain", "gen_gain", "synergy_vs_dense", "policy_summary")  # fmt: skip


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except json.JSONDecodeError:
        return default


def _record(row: dict[str, Any], on_front: bool) -> dict[str, Any]:
    from searchvlm.report import policy_summary

    rec: dict[str, Any] = {"number": row["number"], "trial_id": row["trial_id"], "status": row["status"],
                           "preset": row.get("preset") or None}  # fmt: skip
    rec.update({c: row.get(c) for c in METRIC_COLUMNS})
    rec.update(
        on_front=on_front,
        seeds=_json(row.get("seeds"), []),
        params=_json(row.get("params_json"), {}),
        policy=_json(row.get("policy_json"), None),
        policy_summary=policy_summary(row.get("policy_json")),
        error=row.get("error") or None,
        start_time=row.get("start_time") or None,
        end_time=row.get("end_time") or None,
    )
    rec.update({c: row.get(c) or None for c in (*PLACEMENT_COLUMNS, "cpu")})  # where it ran, on what CPU
    return rec


def _frame(rows: Sequence[dict[str, Any]], on_front: set[str], attrs: dict[str, Any]) -> "pd.DataFrame":
    import pandas as pd

    columns = list(_record({"number": 0, "trial_id": "", "status": ""}, False))
    df = pd.DataFrame([_record(r, r["trial_id"] in on_front) for r in rows], columns=columns)
    df[list(METRIC_COLUMNS)] = df[list(METRIC_COLUMNS)].astype(float)  # missing -> NaN
    df.attrs.update(attrs)
    return df


def _rows(run: str | Path, runs_dir: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    run_dir = resolve_run_dir(run, runs_dir)
    return run_dir, read_trials(run_dir / TRIALS_FILE)


def _merged_rows(run: str | Path, runs_dir: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """Every trial with confirmed numbers merged in (`results.with_confirmed`), as `pareto` reads them."""
    run_dir = resolve_run_dir(run, runs_dir)
    return run_dir, load_ranked(run_dir)[0]


def load_trials(run: str | Path, runs_dir: str | Path = "runs") -> "pd.DataFrame":
    """Every trial of sweep `run` (a name under `runs_dir`, or a sweep folder) as a DataFrame.

    One row per trial in `number` order, failed and pruned trials included (never dropped).
    Columns: `number`, `trial_id` (the id Optuna's `searchvlm_trial_id` and MLflow's
    `trial_id` tag carry), `status` (`ok` | `failed` | `pruned`), `preset`, every metric of
    `trials.csv` by name (`flops_ratio`, `synergy_gain`, `synergy_gain_stderr`, `und_gain`,
    `gen_gain`, `und_acc`, `gen_nll`, their isolated counterparts, `train_seconds`, ...;
    NaN when missing), `on_front`, `seeds` (list), `params` (the sampled parameters, a
    dict), `policy` (the explicit policy, a dict: `ReductionPolicy.model_validate` takes
    it), `policy_summary` (one line), `error`, `start_time`, `end_time`, and where it ran:
    `node` (the Ray node's IP), `gpu_ids` (the GPUs Ray gave it, "0" or "0,1"; None for
    none) and `device` (its torch device, "cuda:0" or "cpu").
    `df.attrs` holds `sweep` and `run_dir`. Raises `ConfigError` for an unknown sweep.
    """
    from searchvlm.objectives.pareto import front

    run_dir, rows = _rows(run, runs_dir)
    return _frame(rows, {r["trial_id"] for r in front(rows)}, {"sweep": _sweep_name(run_dir), "run_dir": str(run_dir)})


def _sweep_name(run_dir: Path) -> str:
    from searchvlm.schema.results import SWEEP_FILE, read_meta

    return read_meta(run_dir / SWEEP_FILE).name if (run_dir / SWEEP_FILE).exists() else run_dir.name


@dataclass(frozen=True)
class Front:
    """A sweep's Pareto front (FLOPs ratio down, synergy gain up) and how it was measured.

    `trials`: the front's rows (the `load_trials` columns) sorted by FLOPs ratio; `knee`:
    the trial id `export` picks by default; `hypervolume` with its reference point `ref`
    `(flops_ratio, synergy_gain)`; `counts`: trials per status. Shows as a table in a
    notebook (`_repr_html_`); `to_dict()` is `searchvlm pareto --json`'s shape.
    """

    sweep: str
    run_dir: Path
    trials: "pd.DataFrame"
    knee: str | None
    hypervolume: float
    ref: tuple[float, float]
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trials)

    def to_frame(self) -> "pd.DataFrame":
        return self.trials

    def _headline(self) -> str:
        total = sum(self.counts.values())
        return (f"{self.sweep}: {len(self)} on the front of {total} trials ({_counts_text(self.counts)}); "
                f"hypervolume {self.hypervolume:.4f} (reference: flops_ratio {self.ref[0]:g}, "
                f"synergy_gain {self.ref[1]:.4f}); knee: {self.knee}")  # fmt: skip

    def _shown(self) -> "pd.DataFrame":
        df = self.trials[list(FRONT_COLUMNS)].copy()
        df.insert(3, "knee", ["*" if t == self.knee else "" for t in df["trial_id"]])
        return df

    def __repr__(self) -> str:
        return f"{self._headline()}\n{self._shown().to_string(index=False)}"

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self._headline())}</p>" + self._shown().to_html(
            index=False, float_format="{:.4f}".format
        )

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "run_dir": str(self.run_dir), "counts": self.counts, "knee": self.knee,
                "hypervolume": self.hypervolume, "ref": {"flops_ratio": self.ref[0], "synergy_gain": self.ref[1]},
                "front": json.loads(self.trials.drop(columns=["policy"]).to_json(orient="records"))}  # fmt: skip


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")


def front_of(rows: Sequence[dict[str, Any]], run_dir: Path, sweep: str,
             ref: Sequence[float] | None = None) -> Front:  # fmt: skip
    """The Front of already-read trials rows (see `load_front`): ranked as `pareto` ranks them
    (`results.ranking_rows`: the confirmed numbers when any exist, repeats not counted twice)."""
    from searchvlm.objectives.pareto import front, hypervolume, knee
    from searchvlm.report import status_counts

    ranked = ranking_rows(list(rows))
    fr = front(ranked)
    hv, ref_nat = hypervolume(ranked, ref)
    frame = _frame(fr, {r["trial_id"] for r in fr}, {"sweep": sweep, "run_dir": str(run_dir)})
    return Front(sweep=sweep, run_dir=run_dir, trials=frame, knee=knee(fr)["trial_id"] if fr else None,
                 hypervolume=hv, ref=ref_nat, counts=status_counts(rows))  # fmt: skip


def load_front(run: str | Path, ref: Sequence[float] | None = None, runs_dir: str | Path = "runs") -> Front:
    """The Pareto front of sweep `run` (a name under `runs_dir`, or a sweep folder).

    `ref`: the hypervolume reference `(flops_ratio, synergy_gain)`; default `pareto.default_ref`
    (1.0, the dense trial's synergy, else the worst seen), as `searchvlm pareto`. Only trials
    with status ok and both objectives are on a front; the knee, hypervolume and counts are
    `pareto`'s numbers.
    """
    run_dir, rows = _merged_rows(run, runs_dir)
    return front_of(rows, run_dir, _sweep_name(run_dir), ref)
