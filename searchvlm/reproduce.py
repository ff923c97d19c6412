"""`reproduce`: the study's Table 3 on our proxy — literature presets side by side.

L4 module. Runs every literature preset with the space's seeds through `run_trial` (the
isolated baselines are trained once and cached, then reused by every row), and writes the
table as Markdown and CSV. MLflow logging goes through `searchvlm.tracking`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from searchvlm.config import TrialConfig, TrialResult
from searchvlm.policy import preset

# (row label, preset name) in the order of the study's Table 3
ROWS: tuple[tuple[str, str], ...] = (
    ("Unified (dense)", "dense"),
    ("FastV (understanding)", "fastv"),
    ("PyramidDrop (understanding)", "pyramiddrop"),
    ("HiMix (understanding)", "himix"),
    ("HMGen K=3 (generation)", "hmgen"),
    ("HMGen K=5 (generation)", "hmgen5"),
    ("HiMix + HMGen, share all", "himix_hmgen"),
    ("HiMix + HMGen, share partial", "himix_hmgen_partial"),
    ("p-MoD cosine (both)", "pmod"),
    ("Tied schedule (synergy-aware)", "tied"),
)
COLUMNS = ("model", "preset", "status", "und_acc", "gen_nll", "gen_fidelity", "flops_ratio",
           "und_gain", "gen_gain", "synergy_gain", "synergy_gain_stderr")


@dataclass
class Table3:
    rows: list[dict]

    def markdown(self) -> str:
        head = "| model | U: accuracy | G: NLL ↓ | G: fidelity | FLOPs | g_U | g_G | synergy (± s.e.) |"
        lines = [head, "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r['model']} | {_f(r['und_acc'])} | {_f(r['gen_nll'])} | {_f(r['gen_fidelity'])} | "
                f"{_f(r['flops_ratio'], '.2f')}× | {_f(r['und_gain'], '+.3f')} | {_f(r['gen_gain'], '+.3f')} | "
                f"{_f(r['synergy_gain'], '+.3f')}{_pm(r['synergy_gain_stderr'])} |"
            )
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in COLUMNS} for r in self.rows)
        return buf.getvalue()


def _f(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _pm(se) -> str:
    return "" if se is None else f" ± {se:.3f}"


def _isolated_rows(first: TrialResult) -> list[dict]:
    """U-only and G-only rows come from the (cached) isolated baselines of any trial."""
    u = {"model": "U-only (isolated)", "preset": "isolated", "status": first.status,
         "und_acc": first.und_acc_iso, "flops_ratio": 1.0}
    g = {"model": "G-only (isolated)", "preset": "isolated", "status": first.status,
         "gen_nll": first.gen_nll_iso, "gen_fidelity": first.gen_fidelity_iso, "flops_ratio": 1.0}
    return [{c: r.get(c) for c in COLUMNS} for r in (u, g)]


def _row(label: str, name: str, result: TrialResult) -> dict:
    row = {c: getattr(result, c, None) for c in COLUMNS if c not in ("model", "preset", "status")}
    return {"model": label, "preset": name, "status": result.status, **row}


def reproduce(
    base: TrialConfig,
    out_dir: str | Path,
    presets: list[str] | None = None,
    on_result: Callable[[str, TrialResult], None] | None = None,
) -> Table3:
    """Run the literature presets on `base` (its model, data, training, seeds) and write
    `table3.md` and `table3.csv` into `out_dir`."""
    from searchvlm.trial import run_trial

    wanted = [(label, name) for label, name in ROWS if presets is None or name in presets]
    rows, first = [], None
    for label, name in wanted:
        config = base.model_copy(update={"policy": preset(name, base.model.num_layers), "name": name})
        result = run_trial(config)
        first = first or result
        rows.append(_row(label, name, result))
        if on_result:
            on_result(name, result)
    table = Table3((_isolated_rows(first) if first else []) + rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table3.md").write_text(table.markdown())
    (out / "table3.csv").write_text(table.csv())
    return table
