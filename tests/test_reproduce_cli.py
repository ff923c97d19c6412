"""`reproduce` (every row of the study's Table 3 on a tiny proxy) and the `trial` CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.sweeps import TINY_REPRODUCE_SPACE as TINY_SPACE
from searchvlm.cli import app
from searchvlm.records.reproduce import COLUMNS, ROWS, reproduce
from searchvlm.schema.space import load_space
from searchvlm.schema.trial_result import TrialResult


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_reproduce_produces_every_row(space_file: Path, tmp_path: Path) -> None:
    base = load_space(space_file).trial_config(None, cache_dir=tmp_path / "cache")
    heard: list[tuple[str, int, int]] = []
    table = reproduce(base, tmp_path / "out", progress=lambda *a: heard.append(a))
    names = [r.preset for r in table.rows]
    assert names == ["isolated", "isolated"] + [p for _, p in ROWS]
    assert all(r.status == "ok" for r in table.rows)
    # progress names each preset, its place and the run; the joint run reaches its last step
    n = len(ROWS)
    assert (f"dense (1 of {n}): joint", 4, 4) in heard and (f"tied ({n} of {n}): joint", 4, 4) in heard
    assert (f"dense (1 of {n}): understanding alone (seed 0)", 2, 4) in heard
    by = {r.preset: r for r in table.rows[2:]}
    assert by["dense"].flops_ratio == pytest.approx(1.0)
    assert by["himix_hmgen"].flops_ratio < by["himix"].flops_ratio < 1.0
    # every reduced row has a synergy gain with a standard error over the two seeds
    assert all(r.synergy_gain_stderr is not None for r in table.rows[2:])
    # U-only / G-only rows are the cached isolated baselines that every row compares with
    assert table.rows[0].und_acc is not None and table.rows[0].gen_nll is None
    assert table.rows[1].gen_nll > 0 and table.rows[1].und_acc is None
    # paired differences against dense: per seed, from the rows' own per-seed records
    runs = json.loads((tmp_path / "out" / "table3.json").read_text())
    for name in ("himix", "pmod"):
        pairs = zip(runs[name]["per_seed"], runs["dense"]["per_seed"])
        diffs = [a["synergy_gain"] - d["synergy_gain"] for a, d in pairs]
        assert by[name].synergy_vs_dense == pytest.approx(sum(diffs) / 2)
        assert by[name].synergy_vs_dense_stderr == pytest.approx(abs(diffs[0] - diffs[1]) / 2)
    assert by["dense"].synergy_vs_dense is None
    # every other column is the trial's own number (table3.json), the note's fields its steps and late runs
    own = {
        "model",
        "preset",
        "status",
        "p_holm",
        "synergy_vs_dense_lower",
        "verdict",
        "seeds",
        "stopped",
        "seeds_needed",
    }
    for row in table.rows[2:]:
        result = TrialResult.model_validate(runs[row.preset])
        numbers = [c for c in COLUMNS if c not in own and "vs_dense" not in c]  # vs dense: from the records
        assert {c: getattr(row, c) for c in numbers} == {c: getattr(result, c) for c in numbers}, row.preset
        assert row.last_step == result.steps_done == 4
    # generation's caption accuracy (what caption_acc spaces compute g_G on): each row's mean
    # over its seeds, the G-only row the isolated model's
    for name in ("dense", "himix"):
        seeds = [p["gen_caption_acc"] for p in runs[name]["per_seed"]]
        assert by[name].gen_caption_acc == pytest.approx(sum(seeds) / 2)
    assert table.rows[1].gen_caption_acc == pytest.approx(runs["dense"]["gen_caption_acc_iso"])
    tested = [r.p_holm for r in table.rows[2:] if r.p_holm is not None]
    assert tested and all(0 <= p <= 1 for p in tested)
    md = (tmp_path / "out" / "table3.md").read_text()
    grid, _, note = md.partition("\n\n")
    assert "HiMix + HMGen, share partial" in grid and grid.count("\n") == len(table.rows) + 1
    assert "| G: caption acc. |" in grid
    # the note: per row, the runs whose scored round is the last one (4), counted from the records
    for name in ("dense", "himix"):
        late = [p["und_step_iso"] == 4 for p in runs[name]["per_seed"]]
        assert f"und_acc alone {sum(late)}/2" in by[name].at_last_round or not any(late)
        assert by[name].at_last_round in note
    assert note.startswith("Runs scored at their last round (step 4;")
    with (tmp_path / "out" / "table3.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(table.rows)


@pytest.mark.slow  # 10-20 s: kept out of the fast tier
def test_trial_cli_json(space_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["trial", str(space_file), "--preset", "himix", "--json", "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["status"] == "ok" and payload["policy"]["name"] == "himix"
    assert 0 < payload["flops_ratio"] < 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--preset", "nope"], "--preset = 'nope'"),
        ([], "give exactly one of --preset NAME or --policy FILE"),
    ],
)
def test_trial_cli_bad_input_exits_2(space_file: Path, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["trial", str(space_file), *args])
    assert result.exit_code == 2
    assert fragment in result.output.replace("\n", " ")


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    from searchvlm.records.reproduce import holm

    # sorted p: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1, but never below the previous)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9]) == [0.9] and holm([0.6, 0.7]) == [1.0, 1.0]


def test_rows_get_the_decision_verdict_at_the_margin() -> None:
    """Table 3's verdict column: each row's paired synergy difference tested against -delta at
    alpha / m (m tested rows), the same rule `confirm` labels its rows with."""
    from scipy import stats

    from searchvlm.records.reproduce import Table3Row, _against_dense
    from searchvlm.schema.search import DecisionSettings

    def result(synergies: list[float]) -> TrialResult:
        per_seed = [{"seed": s, "synergy_gain": v, "und_gain": v, "gen_gain": v} for s, v in enumerate(synergies)]
        return TrialResult(status="ok", flops_ratio=0.5, per_seed=per_seed)

    dense = [0.10, 0.05, 0.08, 0.12, 0.07]
    gain = [0.01, 0.02, 0.0, 0.015, 0.005]
    results = {"dense": result(dense), "fastv": result([d + g for d, g in zip(dense, gain)]),
               "tied": result([d - 0.2 + 0.01 * i for i, d in enumerate(dense)]),
               "hmgen": result([d + e for d, e in zip(dense, [0.05, -0.09, 0.04, -0.08, 0.03])])}  # fmt: skip
    rows = [Table3Row(model=name, preset=name, status="ok", flops_ratio=0.5) for name in results]
    rows = _against_dense(rows, results, DecisionSettings(delta=0.035, alpha=0.05))
    got = {r.preset: r.verdict for r in rows}
    assert got == {"dense": None, "fastv": "non-inferior", "tied": "inferior", "hmgen": "undecided"}
    fastv = next(r for r in rows if r.preset == "fastv")
    half = stats.t.ppf(1 - 0.05 / 3, 4) * stats.sem(gain)  # 3 rows tested: alpha / 3 each
    assert fastv.synergy_vs_dense_lower == pytest.approx(0.01 - half)
