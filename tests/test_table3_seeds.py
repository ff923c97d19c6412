"""benchmarks/table3_seeds.py on the committed P-10 Table 3: the four runs combine, and a row
compared with another dense model (or a row differing between runs) is refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from table3_seeds import details, load  # noqa: E402

RUNS = ROOT / "benchmarks" / "results" / "table3_p10"
FOLDERS = [RUNS / f for f in ("t3-a1", "t3-a2", "t3-b1", "t3-b2")]


def test_the_committed_runs_combine_into_nine_rows() -> None:
    results = load(FOLDERS)
    assert len(results) == 9 and all(r.status == "ok" for r in results.values())
    assert {tuple(sorted(r.seeds)) for r in results.values()} == {(0, 1, 2, 3, 4)}
    tied = next(line for line in details(results).splitlines() if line.startswith("| Tied schedule"))
    # docs/results.md's reading: caption accuracy below dense in every seed, g_G's paired t-test uncorrected
    assert "-0.052 ± 0.011 (5↓ 0↑)" in tied and "-0.083 ± 0.016 (5↓ 0↑, raw p 0.006)" in tied


def _copy(tmp_path: Path) -> list[Path]:
    for f in FOLDERS:
        shutil.copytree(f, tmp_path / f.name)
    return [tmp_path / f.name for f in FOLDERS]


def test_a_row_compared_with_another_dense_model_is_refused(tmp_path: Path) -> None:
    folders = _copy(tmp_path)
    path = folders[3] / "table3.json"
    rows = json.loads(path.read_text())
    rows["tied"]["per_seed"][2]["synergy_vs_dense"] += 0.001  # its reference was not the dense row's model
    path.write_text(json.dumps(rows))
    with pytest.raises(SystemExit, match="'tied', seed 2: its dense reference"):
        load(folders)


def test_a_dense_row_differing_between_runs_is_refused(tmp_path: Path) -> None:
    folders = _copy(tmp_path)
    path = folders[1] / "table3.json"
    rows = json.loads(path.read_text())
    rows["dense"]["per_seed"][0]["und_acc"] += 0.002
    path.write_text(json.dumps(rows))
    with pytest.raises(SystemExit, match="row 'dense' differs"):
        load(folders)
