"""Combine `reproduce` runs that split the presets between processes into one Table 3.

Each run's `table3.json` holds every row's TrialResult (per-seed records). The runs must
share their seeds and each include the dense row (identical across runs: training is
deterministic, so this is checked); the paired differences against dense and the Holm
correction are recomputed over ALL rows together.

    searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2,3,4 \
        --presets dense,fastv,pyramiddrop,himix,hmgen --out runs/t3-a &
    searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2,3,4 \
        --presets dense,himix_hmgen,himix_hmgen_partial,pmod,tied --out runs/t3-b; wait
    python benchmarks/table3_seeds.py runs/t3-a runs/t3-b --out benchmarks/results/table3_default.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from searchvlm.reproduce import ROWS, Table3, _against_dense, _isolated_rows, _row
from searchvlm.trial_result import TrialResult


def _scores(result: TrialResult) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "baseline_cached"} for p in result.per_seed]


def load(folders: list[Path]) -> dict[str, TrialResult]:
    results: dict[str, TrialResult] = {}
    for folder in folders:
        for name, raw in json.loads((folder / "table3.json").read_text()).items():
            result = TrialResult.model_validate(raw)
            if name in results and _scores(results[name]) != _scores(result):
                raise SystemExit(f"{folder}: row {name!r} differs from an earlier run's (not the same proxy?)")
            results[name] = result
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = load(args.folders)
    rows = [_row(label, name, results[name]) for label, name in ROWS if name in results]
    _against_dense(rows, results)
    table = Table3(_isolated_rows(results["dense"]) + rows)
    text = table.markdown()
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".csv").write_text(table.csv())


if __name__ == "__main__":
    main()
