"""The CPU model beside every result (trial, reference cache, trials.csv, MLflow), and the
refusal to combine rows measured on different CPU types (`table3_seeds.py`, `confirm`)."""

from __future__ import annotations

import json
import platform
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchvlm._host import _first_cpu, cpu_model, cpu_set, joined, mixed_cpus, unrecorded
from searchvlm.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.errors import ConfigError
from searchvlm.policy import preset
from searchvlm.results import CONFIRMED_FILE, TrialRun, read_trials, trial_row, write_trials
from searchvlm.tracking import Tracker, default_uri
from searchvlm.trial import run_trial
from searchvlm.trial_result import TrialResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from table3_seeds import load, measured_on  # noqa: E402

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC  7B13
stepping\t: 1

processor\t: 1
model name\t: Other
"""
OTHER = "Intel(R) Xeon(R) CPU @ 2.20GHz (family 6, model 79, stepping 0)"


def test_the_cpu_model_is_read_from_cpuinfo() -> None:
    info = _first_cpu(CPUINFO)
    assert (info["model name"], info["cpu family"], info["model"]) == ("AMD EPYC  7B13", "25", "1")
    here = cpu_model()
    if Path("/proc/cpuinfo").exists():
        first = _first_cpu(Path("/proc/cpuinfo").read_text())
        assert here.startswith(" ".join(first["model name"].split()))
        assert f"family {first['cpu family']}, model {first['model']}" in here
    else:
        assert here == (platform.processor() or platform.machine() or "unknown CPU")


def test_mixed_cpus_names_every_row_and_model() -> None:
    a = "AMD EPYC (family 25, model 1, stepping 1)"
    assert mixed_cpus({"dense": a, "himix": a, "old": None}) is None
    problem = mixed_cpus({"dense": a, "himix": OTHER, "old": "", "pmod": a})
    assert (
        problem
        == f"rows measured on different CPU types ({a}: dense, pmod; {OTHER}: himix): their numbers are not comparable"
    )
    assert mixed_cpus({"tied": joined([a, OTHER])}) is not None  # one row, two CPU types
    assert cpu_set(joined([a, None, a])) == {a} and joined([None, ""]) is None
    assert unrecorded({"dense": a, "old": None, "older": ""}) == ["old", "older"]


def _tiny(tmp_path: Path) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64),
        data=DataConfig(train_size=64, val_size=32, test_size=32),
        training=TrainingConfig(steps=4, eval_every=2, batch_size=8, threads=1),
        cache_dir=str(tmp_path / "cache"),
        policy=preset("himix", 2),
    )


def test_a_trial_records_its_cpu_and_its_cached_references(tmp_path: Path) -> None:
    """A trial's result names this CPU; once its cached reference runs say they trained on
    another CPU type, the next trial's result names both (and is flagged as mixed)."""
    first = run_trial(_tiny(tmp_path))
    assert first.status == "ok" and first.cpu == cpu_model()
    for path in (tmp_path / "cache" / "baselines").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["cpu"] == cpu_model()
        path.write_text(json.dumps({**record, "cpu": OTHER}))
    again = run_trial(_tiny(tmp_path))
    assert again.per_seed[0].synergy_gain == first.per_seed[0].synergy_gain
    assert cpu_set(again.cpu) == {cpu_model(), OTHER} and mixed_cpus({"t": again.cpu}) is not None


def test_trials_csv_and_mlflow_carry_the_cpu(tmp_path: Path) -> None:
    pol = preset("himix", 4)
    result = TrialResult(flops_ratio=0.5, synergy_gain=0.2, steps_done=20, policy=pol, cpu=OTHER)
    write_trials(tmp_path / "trials.csv", [trial_row(result, "t0", 0, run=TrialRun())])
    assert read_trials(tmp_path / "trials.csv")[0]["cpu"] == OTHER
    (tmp_path / "s.yaml").write_text("model: {num_layers: 4}\n")
    tracker = Tracker(default_uri(tmp_path), tmp_path)
    parent = tracker.start_sweep("sw", tmp_path / "s.yaml", {"samples": 1})
    child = tracker.child("tid", "t0000", pol.flat_params(), {})
    tracker.finish_trial(child, result, pol.to_json())
    assert tracker.client.get_run(child).data.tags["cpu"] == OTHER  # what its numbers were measured on
    assert tracker.client.get_run(parent).data.tags["cpu"] == cpu_model()  # where the sweep ran


RUNS = ROOT / "benchmarks" / "results" / "table3_p10"
FOLDERS = [RUNS / f for f in ("t3-a1", "t3-a2", "t3-b1", "t3-b2")]


def _table3(tmp_path: Path, cpus: dict[str, str]) -> list[Path]:
    """The committed Table-3 runs, every row's `cpu` set from `cpus` (row -> CPU)."""
    folders = []
    for folder in FOLDERS:
        shutil.copytree(folder, tmp_path / folder.name)
        path = tmp_path / folder.name / "table3.json"
        rows = json.loads(path.read_text())
        path.write_text(json.dumps({n: {**r, "cpu": cpus.get(n, cpus.get("*"))} for n, r in rows.items()}))
        folders.append(tmp_path / folder.name)
    return folders


def test_table3_refuses_rows_from_different_cpu_types(tmp_path: Path) -> None:
    one = "AMD EPYC (family 25, model 1, stepping 1)"
    with pytest.raises(
        SystemExit,
        match=re.escape(f"fastv, pyramiddrop, hmgen, himix_hmgen, himix_hmgen_partial, pmod, tied; {OTHER}: himix)"),
    ):
        load(_table3(tmp_path / "mixed", {"*": one, "himix": OTHER}))
    results = load(_table3(tmp_path / "same", {"*": one}))
    assert len(results) == 9 and measured_on(results) == f"Measured on: {one}."


def test_table3_notes_rows_that_recorded_no_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    results = load(FOLDERS)  # committed before the CPU was recorded: combined, with a note
    assert len(results) == 9 and measured_on(results) == "Measured on: CPU not recorded."
    assert "note: no CPU model recorded for rows dense" in capsys.readouterr().err


def test_confirm_refuses_to_add_rows_from_another_cpu_type(tmp_path: Path) -> None:
    from searchvlm.cli import app
    from searchvlm.confirm import run_confirm
    from test_confirm import SEEDS, make_sweep

    run = make_sweep(tmp_path)
    (run / CONFIRMED_FILE).write_text(
        f'trial_id,number,status,seeds,synergy_gain,cpu\nt1,1,ok,"[1, 2]",0.1,"{OTHER}"\n'
    )
    with pytest.raises(ConfigError, match=r"confirmed.csv: trial t1.cpu = .*another CPU type than this machine"):
        run_confirm(run, seeds=SEEDS)
    result = CliRunner().invoke(app, ["confirm", str(run), "--seeds", "1,2"])
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert "Traceback" not in result.output


def test_the_trial_table_names_the_runs_still_improving_at_the_last_round() -> None:
    """`trial`'s caption: the g_U / g_G runs whose best round was the last one, per seed."""
    from rich.console import Console

    from searchvlm._console import result_table
    from searchvlm.trial_result import SeedResult, best_at_last_round

    seeds = [SeedResult(seed=0, und_step_joint=300, und_step_iso=600, gen_caption_acc_step_joint=600,
                        gen_caption_acc_step_iso=450, gen_step_joint=600, gen_step_iso=600),
             SeedResult(seed=1, und_step_joint=600, und_step_iso=600, gen_caption_acc_step_joint=150,
                        gen_caption_acc_step_iso=300, gen_step_joint=600, gen_step_iso=600)]  # fmt: skip
    runs = best_at_last_round(seeds, 600, ("und_acc", "gen_caption_acc"))
    assert runs == [("und_acc", "joint", 1, 2), ("und_acc", "alone", 2, 2), ("gen_caption_acc", "joint", 1, 2),
                    ("gen_caption_acc", "alone", 0, 2)]  # fmt: skip
    result = TrialResult(synergy_gain=0.1, flops_ratio=0.5, seeds=[0, 1], per_seed=seeds)
    console = Console(width=300, record=True)
    console.print(result_table(result, "caption_acc", 600))
    text = " ".join(console.export_text().split())
    late = "und_acc joint 1/2, und_acc alone 2/2, gen_caption_acc joint 1/2"  # not the NLL runs: g_G is on captions
    assert f"best round = the last (step 600), a gain at this budget: {late}" in text
    console = Console(width=300, record=True)
    console.print(result_table(result, "caption_acc", 900))
    assert "every run of g_U and g_G peaked before its last round (900)" in " ".join(console.export_text().split())


def test_the_trial_table_says_which_cpu_measured_it() -> None:
    from rich.console import Console

    from searchvlm._console import result_table

    console = Console(width=200, record=True)
    console.print(result_table(TrialResult(synergy_gain=0.1, flops_ratio=0.5, seeds=[0], cpu=OTHER)))
    assert f"measured on {OTHER}" in " ".join(console.export_text().split())  # the caption wraps
