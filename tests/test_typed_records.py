"""The typed records: `trial_result.SeedResult` (one seed's numbers in `TrialResult.per_seed`)
and `reproduce.Table3Row` (one row of Table 3). Files written while they were dicts load and
are written back with the same JSON values; a name neither record has is refused; the
per-seed record's metric keys follow the metric registry (a metric registered from this file
rides along); Table 3 built from the committed P-10 runs is the same, byte for byte and in
what MLflow is given, as when its rows were dicts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from searchvlm.records.reproduce import COLUMNS, ROWS, Table3, Table3Row, _against_dense, _isolated_rows, _row
from searchvlm.schema.metrics import REGISTRY, MetricInfo, register_metric
from searchvlm.schema.trial_result import SEED_MEANS, SeedResult, TrialResult, seed_metric_fields

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: table3.json files written while the per-seed records were dicts (older key orders, no `cpu`)
OLD_FILES = sorted([*RESULTS.glob("table3_default/*.json"), *RESULTS.glob("table3_p10/*/table3.json")])
P10 = [RESULTS / "table3_p10" / f for f in ("t3-a1", "t3-a2", "t3-b1", "t3-b2")]


@pytest.mark.parametrize("path", OLD_FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_an_old_table3_json_loads_and_round_trips(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw
    for name, old in raw.items():
        result = TrialResult.model_validate(old)
        assert all(isinstance(p, SeedResult) for p in result.per_seed) and result.per_seed
        back = json.loads(result.model_dump_json())
        assert back["per_seed"] == old["per_seed"], name  # the same keys and values, seed by seed
        assert {k: back[k] for k in old} == old, name
        assert all(back[k] is None for k in back.keys() - old.keys()), name  # fields added since: unset
        again = TrialResult.model_validate_json(result.model_dump_json())
        assert again == result and json.loads(again.model_dump_json()) == back


def test_a_record_keeps_the_keys_it_was_given() -> None:
    old = json.loads((P10[0] / "table3.json").read_text())["dense"]["per_seed"][0]
    seed = SeedResult.model_validate(old)
    assert seed.model_fields_set == old.keys() and seed.model_dump() == old
    assert seed.und_acc == old["und_acc"] and seed.baseline_cached == old["baseline_cached"]
    assert isinstance(seed.und_step_joint, int) and seed.gen_gain_below_chance is None  # typed; absent: None
    assert "gen_gain_below_chance" not in seed.model_dump()  # and still absent when written
    bare = SeedResult(seed=3, synergy_gain=0.1)
    assert bare.model_dump() == {"seed": 3, "synergy_gain": 0.1}


def test_a_misspelt_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted: und_accuracy"):
        SeedResult(seed=0, und_accuracy=0.5)
    with pytest.raises(ValidationError, match="seed"):
        SeedResult(und_acc=0.5)  # every record names its seed
    with pytest.raises(ValidationError, match="Input should be a valid integer"):
        SeedResult(seed=0, und_step_joint="late")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrialResult(per_seed=[{"seed": 0, "synergy_gian": 0.1}])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Table3Row(model="Unified (dense)", preset="dense", status="ok", synergy_vs_dens=0.1)
    with pytest.raises(ValidationError, match="status"):
        Table3Row(model="Unified (dense)", preset="dense", status="done")
    row = Table3Row(model="Unified (dense)", preset="dense", status="ok")
    with pytest.raises(ValidationError, match="frozen"):
        row.p_holm = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        SeedResult(seed=0).synergy_gain = 0.5  # type: ignore[misc]


def test_the_per_seed_fields_follow_the_metric_registry() -> None:
    fields = SeedResult.model_fields
    for m in REGISTRY.values():
        assert set(seed_metric_fields(m)) <= fields.keys(), m.name
    assert {m.name for m in REGISTRY.values()} | {m.iso for m in REGISTRY.values()} <= fields.keys()
    assert set(SEED_MEANS) <= fields.keys()  # every mean over seeds has its per-seed value
    assert [f for f in fields if f.startswith("und_acc")] == ["und_acc", "und_acc_test_se", "und_acc_iso",
                                                              "und_acc_iso_test_se"]  # fmt: skip
    assert tuple(f for f in Table3Row.model_fields if f not in ("last_step", "at_last_round")) == COLUMNS


LATE = MetricInfo("und_late", "understanding", False, "a metric registered by a test", "late", scorer="und_late",
                  test_se=True)  # fmt: skip


@pytest.fixture
def late() -> Iterator[MetricInfo]:
    register_metric(LATE)
    try:
        yield LATE
    finally:
        del REGISTRY[LATE.name]


def test_a_metric_registered_later_rides_on_the_record(late: MetricInfo) -> None:
    keys = seed_metric_fields(late)
    assert list(keys) == ["und_late", "und_late_test_se", "und_late_step_joint", "und_late_iso",
                          "und_late_iso_test_se", "und_late_step_iso"]  # fmt: skip
    seed = SeedResult(seed=0, und_late=0.25, und_late_step_joint=3, und_late_iso=0.5)
    assert (seed.und_late, seed.und_late_step_joint, seed.und_late_iso) == (0.25, 3, 0.5)
    assert seed.model_dump() == {"seed": 0, "und_late": 0.25, "und_late_step_joint": 3, "und_late_iso": 0.5}
    assert SeedResult.model_validate_json(seed.model_dump_json()) == seed
    with pytest.raises(ValidationError, match="und_lat_iso"):
        SeedResult(seed=0, und_lat_iso=0.5)


def test_a_late_metric_is_refused_once_unregistered() -> None:
    with pytest.raises(ValidationError, match="und_late"):
        SeedResult(seed=0, und_late=0.25)


def _p10_table() -> Table3:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from table3_seeds import load

    results = load(P10)
    rows = [_row(label, name, results[name]) for label, name in ROWS if name in results]
    return Table3(_isolated_rows(results["dense"]) + _against_dense(rows, results))


def _without_seed_columns(markdown: str, text: str) -> str:
    """The Markdown table without its last column (seeds) and the CSV without the last three."""
    md = [line.rsplit("|", 2)[0] + "|" if line.startswith("|") else line for line in markdown.split("\n")]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][-3:] == ["seeds", "stopped", "seeds_needed"]
    out = io.StringIO()
    csv.writer(out).writerows(r[:-3] for r in rows)
    return "\n".join(md) + out.getvalue()


def test_table3_from_the_committed_runs_is_what_the_dict_rows_gave() -> None:
    """Digests of the same table built with dict rows (main at 7fca527): its Markdown and CSV
    without the columns `reproduce --max-seeds` added after it (seeds, stopped, seeds_needed),
    and the metrics `tracking.log_table` logs (`<preset>.<column>`, the numbers only)."""
    from searchvlm.tracking._store import is_number

    table = _p10_table()
    assert all(isinstance(r, Table3Row) for r in table.rows)
    text = _without_seed_columns(table.markdown(), table.csv())
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "a2f0035882da7f23"
    logged = sorted((f"{r['preset'] if r['preset'] != 'isolated' else r['model'].split()[0]}.{k}", float(v))
                    for r in table.flat() for k, v in r.items() if is_number(v))  # fmt: skip
    assert len(logged) == 164
    assert hashlib.sha256(json.dumps(logged).encode()).hexdigest()[:16] == "9a229d64778fac6f"
    fastv = next(r for r in table.rows if r.preset == "fastv")
    assert fastv.p_holm == 1.0 and fastv.last_step == 600 and fastv.verdict is None
    assert fastv.synergy_vs_dense == pytest.approx(0.04789224893698674, abs=1e-15)
