"""The numbers of a sweep's front: counts, front rows, knee, hypervolume, ties (no drawing).

Read once (`read_sweep`): the search's trials, the rows a front is ranked on (confirmed
numbers when `confirmed.csv` exists, repeats once) and that front. `pareto_summary` is the
JSON summary, `front_table` the same front as table cells, `summary_metrics` what the
sweep's MLflow parent run carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.objectives.pareto import (
    Row,
    default_ref_source,
    finite_number,
    front,
    hypervolume,
    hypervolume_history,
    is_valid,
    knee,
    near_front,
    per_seed,
    pooled_seed_sd,
    ties,
)
from searchvlm.schema.results import (
    CONFIRMED_FILE,
    OBJECTIVE_COLUMNS,
    SWEEP_FILE,
    TRIALS_FILE,
    TrialRow,
    ranking_rows,
    read_confirmed,
    read_meta,
    read_trials,
    resolve_run_dir,
    with_confirmed,
)
from searchvlm.schema.trial_result import gen_gain_text

#: `hypervolume(rows, ref)`: the volume and the reference point it was computed against
Volume = tuple[float, tuple[float, float]]

__all__ = [
    "SeedNoise",
    "Sweep",
    "Volume",
    "confirmed_seeds",
    "fmt",
    "front_cells",
    "front_table",
    "pareto_summary",
    "policy_summary",
    "one_seed",
    "read_sweep",
    "seed_noise",
    "seeds_of",
    "status_counts",
    "summary_metrics",
    "summary_of",
    "sweep_ties",
]


def _runs(values: Sequence[float]) -> str:
    """Run-length text of a keep list: `1 0×3` for [1, 0, 0, 0]."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        out.append(f"{values[i]:.2g}" + (f"×{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(out)


def policy_summary(policy: TrialRow | str | None) -> str:
    """One line: per task mode, selector and keep ratios (run-length); sharing; tied. Of a
    row's decoded policy, or of `policy_json` text."""
    r = policy if isinstance(policy, TrialRow) else TrialRow.of({"policy_json": policy or ""})
    if not r.policy_text:
        return "(no policy recorded)"
    p = r.policy
    try:
        if p is None:
            raise TypeError("not a JSON object")
        parts = [
            f"{t[:3]} {p[t]['mode']}/{p[t]['selector']} keep {_runs(p[t]['keep'])}"
            for t in ("understanding", "generation")
        ]
        sh = p.get("sharing", {})
        parts.append(f"qkv {sh.get('qkv', 'shared')}, mlp {sh.get('mlp', 'shared')}")
    except (KeyError, TypeError):
        return "(unreadable policy)"
    return " · ".join(parts) + (" · tied" if p.get("tie_schedules") else "")


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number as display text; `–` when missing or not finite."""
    v = finite_number(value)
    return "–" if v is None else format(v, spec)


@dataclass(frozen=True)
class SeedNoise:
    """How much one seed's synergy moves on a sweep's proxy: pooled over its trials with 2+
    seeds (`pooled`), else its space's calibration (`calibration`, the dense policy's seed SD)."""

    sd: float
    source: str  # "pooled" | "calibration"

    def line(self, sweep: str, one_seed: bool) -> str:
        where = "pooled over its trials with 2+ seeds" if self.source == "pooled" else "the space's calibration"
        text = f"seed noise: one seed's synergy_gain varies by SD {self.sd:.3f} on this proxy ({where})"
        if one_seed:
            text += (f"; these trials have one seed each, so front differences below ~{2 * self.sd:.2f} read as "
                     f"noise: next, `searchvlm confirm {sweep}` retrains the front on fresh seeds")  # fmt: skip
        return text


def seed_noise(run: Path, rows: Sequence[Row]) -> SeedNoise | None:
    """The sweep's one-seed noise (`SeedNoise`), or None when neither source says."""
    pooled = pooled_seed_sd(rows)
    if pooled is not None:
        return SeedNoise(pooled, "pooled")
    sd = _calibrated_sd(run)
    return None if sd is None else SeedNoise(sd, "calibration")


def _calibrated_sd(run: Path) -> float | None:
    """`calibration.synergy_sd` of the space copy in the run folder (None if absent or unreadable)."""
    from searchvlm.schema.errors import ConfigError
    from searchvlm.schema.space import load_space

    try:
        meta = read_meta(run / SWEEP_FILE)
        space = load_space(run / Path(meta.space_path).name)
    except (ConfigError, OSError, ValueError):
        return None
    return space.calibration.synergy_sd if space.calibration else None


def one_seed(rows: Sequence[Row]) -> bool:
    """Every valid row's numbers come from a single seed."""
    return all(len(r.seeds) <= 1 for r in map(TrialRow.of, rows) if r.status == "ok")


def sweep_ties(rows: Sequence[Row], sd: float | None = None) -> dict[str, list[str]]:
    """Per front trial id, the front points its synergy ties with (seed s.d. as default s.e.:
    `sd`, else pooled over the rows)."""
    return ties(rows, default_se=pooled_seed_sd(rows) if sd is None else sd)


def seeds_of(r: Row) -> list[int]:
    """The seeds a row's numbers average (`TrialRow.seeds`)."""
    return TrialRow.of(r).seeds


def confirmed_seeds(rows: Sequence[Row]) -> list[int] | None:
    """The fresh seeds of confirmed rows; None when the rows are the search's."""
    confirmed = [r for r in map(TrialRow.of, rows) if r.confirmed]
    return confirmed[0].seeds if confirmed else None


# --------------------------------------------------------------------------- the front as a table


def _numbers_of(ids: list[str], rows: Sequence[TrialRow]) -> str:
    num = {r.trial_id: r.get("number") for r in rows}
    return " ".join(f"#{num.get(i, i)}" for i in ids)


def front_table(rows: Sequence[Row]) -> list[dict[str, str]]:
    """Rows of the front (by FLOPs) as display strings; keys are the column headers.
    `ties`: the front points whose synergy this one's is within 2 paired standard errors
    of; `seeds`: how many seeds the numbers average (`confirmed` marks fresh-seed numbers)."""
    return front_cells(front(rows), sweep_ties(rows))


def front_cells(fr: Sequence[Row], tie: dict[str, list[str]]) -> list[dict[str, str]]:
    """`front_table` of a front already computed, with its ties."""
    knee_id = TrialRow.of(knee(fr)).trial_id if fr else None
    rows = [TrialRow.of(r) for r in fr]
    return [
        {
            "trial": r.trial_id,
            "#": str(r.get("number", "")),
            "preset": r.preset,
            "FLOPs ratio": fmt(r["flops_ratio"]),
            "synergy gain": fmt(r["synergy_gain"], "+.4f"),
            "± s.e.": fmt(r.get("synergy_gain_stderr"), ".4f"),
            "vs dense": fmt(r.get("synergy_vs_dense"), "+.4f"),
            "seeds": f"{len(r.seeds)}{' confirmed' if r.confirmed else ''}",
            "ties": _numbers_of(tie.get(r.trial_id, []), rows),
            "und gain": fmt(r.get("und_gain"), "+.4f"),
            "gen gain": gen_gain_text(r, missing="–"),
            "knee": "*" if r.trial_id == knee_id else "",
            "policy": policy_summary(r),
        }
        for r in rows
    ]


# --------------------------------------------------------------------------- the JSON summary


def status_counts(rows: Sequence[Row]) -> dict[str, int]:
    """Trials per status: `ok` (valid numbers), `failed`, `pruned`, `incomplete` (the rest)."""
    out = {"ok": 0, "failed": 0, "pruned": 0, "incomplete": 0}
    for r in rows:
        status = r.get("status")
        out["ok" if is_valid(r) else status if status in ("failed", "pruned") else "incomplete"] += 1
    return out


def _summary_row(row: Row, tie: dict[str, list[str]] | None = None) -> dict[str, Any]:
    r = TrialRow.of(row)
    keys = [c for c in OBJECTIVE_COLUMNS if not c.endswith(("_iso", "fidelity"))]
    out: dict[str, Any] = {
        "trial_id": r["trial_id"],
        "number": None if finite_number(r.get("number")) is None else int(r["number"]),
        "preset": r.preset or None,
    }
    out.update({k: r.value(k) for k in keys})
    by_seed = per_seed(r)
    out.update(
        confirmed=r.confirmed,
        seeds=list(r.seeds),
        synergy_per_seed=[by_seed[s] for s in r.seeds if s in by_seed],
        search_synergy_gain=r.value("search_synergy_gain" if r.confirmed else "synergy_gain"),
        ties=list((tie or {}).get(r.trial_id, [])),
    )
    out["policy"] = policy_summary(r)
    return out


@dataclass(frozen=True)
class Sweep:
    """A sweep read once: its folder and name, trials.csv as the search wrote it (counts,
    hypervolume history), the rows a front is ranked on (confirmed numbers when they exist)
    and that front."""

    run: Path
    name: str
    search: list[TrialRow]
    rows: list[TrialRow]
    front: list[TrialRow]
    noise: SeedNoise | None = None


def read_sweep(run: Path) -> Sweep:
    """`run`'s tables, read once, and its front."""
    confirmed = read_confirmed(run / CONFIRMED_FILE)
    search = read_trials(run / TRIALS_FILE)
    rows = ranking_rows(with_confirmed(search, confirmed))
    name = read_meta(run / SWEEP_FILE).name if (run / SWEEP_FILE).exists() else run.name
    return Sweep(run, name, search, rows, front(rows), seed_noise(run, rows))


def pareto_summary(
    run_dir: str | Path, ref: Sequence[float] | None = None, runs_dir: str | Path = "runs"
) -> dict[str, Any]:
    """JSON-ready summary: counts, front rows (each with its standard error, seeds, ties and
    `confirmed` flag), near-front, knee, hypervolume, reference point, history. `numbers`
    says whether the front is read from confirmed (fresh-seed) or search numbers."""
    s = read_sweep(resolve_run_dir(run_dir, runs_dir))
    return summary_of(s, ref, hypervolume(s.rows, ref), sweep_ties(s.rows, s.noise and s.noise.sd))


def summary_of(s: Sweep, ref: Sequence[float] | None, hv: Volume, tie: dict[str, list[str]]) -> dict[str, Any]:
    """`pareto_summary` of a sweep read once; `hv`: `hypervolume(s.rows, ref)`, `tie`: `sweep_ties(s.rows)`."""
    (hv, ref_nat), rows, fr, search = hv, s.rows, s.front, s.search
    seeds = confirmed_seeds(rows)
    sd = s.noise.sd if s.noise else None
    return {
        "sweep": s.name,
        "run_dir": str(s.run),
        "trials": len(search),
        "counts": status_counts(search),
        "numbers": "confirmed" if seeds is not None else "search",
        "confirmed_seeds": seeds,
        "confirmed_policies": len(rows) if seeds is not None else 0,
        "ref": {"flops_ratio": ref_nat[0], "synergy_gain": ref_nat[1]},
        "ref_is_default": ref is None,
        "ref_source": "user" if ref is not None else default_ref_source(rows),
        "hypervolume": hv,
        "knee": knee(fr)["trial_id"] if fr else None,
        "front": [_summary_row(r, tie) for r in fr],
        "near_front": [str(r["trial_id"]) for r in near_front(rows, default_se=sd)],
        "history": [{"number": n, "hypervolume": h} for n, h in hypervolume_history(search, ref_nat)],
        "seed_noise": None if s.noise is None else {"synergy_sd": s.noise.sd, "source": s.noise.source},
        "seed_noise_line": None if s.noise is None else s.noise.line(s.name, one_seed(rows)),
    }


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a `pareto_summary` that the sweep's MLflow parent run carries:
    `hypervolume`, `front_size`, `knee_flops_ratio`, `knee_synergy_gain` (the trial `export`
    picks by default; absent when the front is empty), `trials` and `trials_<status>`."""
    out: dict[str, float] = {"hypervolume": summary["hypervolume"], "front_size": len(summary["front"]),
                             "trials": summary["trials"]}  # fmt: skip
    out.update({f"trials_{k}": v for k, v in summary["counts"].items()})
    knee_row = next((r for r in summary["front"] if r["trial_id"] == summary["knee"]), None)
    if knee_row is not None:
        out.update(knee_flops_ratio=knee_row["flops_ratio"], knee_synergy_gain=knee_row["synergy_gain"])
    return out
