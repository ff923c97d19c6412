"""Combine `reproduce` runs that split the presets between processes into one Table 3.

Each run's `table3.json` holds every row's TrialResult (per-seed records). The runs must
share their seeds, and one of them must include the dense row. A row found in two runs must
be identical in both (training is deterministic, so this is checked), and a row trained
with `synergy.vs_dense` must have been compared with that same dense model: its per-seed
synergy minus its `synergy_vs_dense` must equal the dense row's synergy (checked too: a run
on another CPU type or proxy fails here). The paired differences against dense and the Holm
correction are recomputed over ALL rows together. Rows measured on different CPU types
(`TrialResult.cpu`) are refused, not flagged: the same configuration and seeds differed more
between two CPU types than between seeds (issue 35), so a paired, Holm-corrected table over
them would print numbers that mean nothing, and a committed table is read without the
console output a flag would live in. Rows made before the CPU was recorded are combined
with a note saying it could not be checked. The run without the dense row can list
its seeds in reverse, so that two processes train the cached baselines of different seeds first:

    searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2,3,4 \
        --presets dense,fastv,pyramiddrop --out runs/t3-a1 &
    searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2,3,4 \
        --presets dense,himix,hmgen --out runs/t3-a2; wait
    searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2,3,4 \
        --presets himix_hmgen,himix_hmgen_partial --out runs/t3-b1 &
    searchvlm reproduce search_spaces/default.yaml --seeds 4,3,2,1,0 \
        --presets pmod,tied --out runs/t3-b2; wait
    python benchmarks/table3_seeds.py runs/t3-a1 runs/t3-a2 runs/t3-b1 runs/t3-b2 --out benchmarks/results/table3_p10.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from searchvlm.objectives.synergy import mean_stderr
from searchvlm.records.reproduce import ROWS, Table3, _against_dense, _isolated_rows, _paired, _row
from searchvlm.schema._host import joined, mixed_cpus, unrecorded
from searchvlm.schema.trial_result import TrialResult


def _scores(result: TrialResult) -> list[dict]:
    """The per-seed records in seed order (a run may list its seeds in reverse)."""
    by_seed = sorted(result.per_seed, key=lambda p: p.seed)
    return [p.model_dump(exclude={"baseline_cached"}) for p in by_seed]


def load(folders: list[Path]) -> dict[str, TrialResult]:
    results: dict[str, TrialResult] = {}
    for folder in folders:
        for name, raw in json.loads((folder / "table3.json").read_text()).items():
            result = TrialResult.model_validate(raw)
            if name in results and _scores(results[name]) != _scores(result):
                raise SystemExit(f"{folder}: row {name!r} differs from an earlier run's (not the same proxy?)")
            results[name] = result
    if "dense" not in results:
        raise SystemExit(f"no run in {', '.join(map(str, folders))} has the dense row")
    _check_cpus(results)
    dense = {p.seed: p.synergy_gain for p in results["dense"].per_seed}
    for name, result in results.items():
        if sorted(p.seed for p in result.per_seed) != sorted(dense):
            raise SystemExit(f"row {name!r} ran seeds {sorted(result.seeds)}, the dense row {sorted(dense)}")
        for p in result.per_seed:
            if p.synergy_vs_dense is not None and abs(p.synergy_gain - p.synergy_vs_dense - dense[p.seed]) > 1e-9:
                raise SystemExit(f"row {name!r}, seed {p.seed}: its dense reference is not the dense row's model")
    return results


def _check_cpus(results: dict[str, TrialResult]) -> None:
    """Refuse rows measured on different CPU types; note the rows that recorded none."""
    cpus = {name: result.cpu for name, result in results.items()}
    mixed = mixed_cpus(cpus)
    if mixed:
        raise SystemExit(f"{mixed}; combine runs made on one CPU type")
    if unrecorded(cpus):
        print(f"note: no CPU model recorded for rows {', '.join(unrecorded(cpus))} (made before it was): "
              "cannot check that they were measured on one CPU type", file=sys.stderr)  # fmt: skip


def measured_on(results: dict[str, TrialResult]) -> str:
    """The line under the table saying which CPU type its numbers come from."""
    return f"Measured on: {joined(r.cpu for r in results.values()) or 'CPU not recorded'}."


#: --details: per-seed keys whose paired difference (row - dense) is shown, and which get a raw t-test
DETAILS = {"und_acc": False, "gen_nll": False, "gen_caption_acc": False, "gen_gain": True, "synergy_gain": True}


def details(results: dict[str, TrialResult]) -> str:
    """Each row's paired differences from dense (mean +- s.e., seeds below / above dense) in the raw
    metrics and gains, with an uncorrected one-sample t-test p where DETAILS asks for one."""
    from scipy import stats

    lines = ["| row | " + " | ".join(f"Δ{k}" for k in DETAILS) + " |", "|---|" + "---|" * len(DETAILS)]
    for label, name in ROWS:
        if name not in results or name == "dense":
            continue
        cells = []
        for key, tested in DETAILS.items():
            diffs = [a - b for a, b in zip(*_paired(results[name], results["dense"], key))]
            mean, se = mean_stderr(diffs)
            cell = f"{mean:+.3f} ± {se:.3f} ({sum(d < 0 for d in diffs)}↓ {sum(d > 0 for d in diffs)}↑"
            cells.append(cell + (f", raw p {stats.ttest_1samp(diffs, 0.0).pvalue:.3f})" if tested else ")"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--details", action="store_true", help="also print each row's paired differences per metric")
    args = ap.parse_args()
    results = load(args.folders)
    rows = [_row(label, name, results[name]) for label, name in ROWS if name in results]
    rows = _against_dense(rows, results)
    table = Table3(_isolated_rows(results["dense"]) + rows)
    text = f"{table.markdown()}\n\n{measured_on(results)}\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".csv").write_text(table.csv())
    if args.details:
        print("\n" + details(results))


if __name__ == "__main__":
    main()
