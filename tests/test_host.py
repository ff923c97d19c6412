"""The CPU model beside every result (trial, reference cache, trials.csv, MLflow), and the
refusal to combine rows measured on different CPU types (`table3_seeds.py`, `confirm`)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchvlm.schema._host import (
    KERNELS_ENV,
    PINS,
    _first_cpu,
    cpu_model,
    cpu_set,
    joined,
    machine,
    mixed_cpus,
    numerics_class,
    pin_kernels,
    pinned_level,
    unrecorded,
)
from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import preset
from searchvlm.schema.results import CONFIRMED_FILE, TrialRun, read_trials, trial_row, write_trials
from searchvlm.schema.trial_result import TrialResult
from searchvlm.tracking import Tracker, default_uri
from searchvlm.train.trial import run_trial

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
    assert first.status == "ok" and first.cpu == machine()
    for path in (tmp_path / "cache" / "baselines").glob("*.json"):
        record = json.loads(path.read_text())
        assert record["cpu"] == machine()
        path.write_text(json.dumps({**record, "cpu": OTHER}))
    again = run_trial(_tiny(tmp_path))
    assert again.per_seed[0].synergy_gain == first.per_seed[0].synergy_gain
    assert cpu_set(again.cpu) == {machine(), OTHER} and mixed_cpus({"t": again.cpu}) is not None


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
    assert tracker.client.get_run(parent).data.tags["cpu"] == machine()  # where the sweep ran


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
    from searchvlm.records.confirm import run_confirm
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

    from searchvlm.report._console import result_table
    from searchvlm.schema.trial_result import SeedResult, best_at_last_round

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

    from searchvlm.report._console import result_table

    console = Console(width=200, record=True)
    console.print(result_table(TrialResult(synergy_gain=0.1, flops_ratio=0.5, seeds=[0], cpu=OTHER)))
    assert f"measured on {OTHER}" in " ".join(console.export_text().split())  # the caption wraps


# ---------------------------------------------------------------- pinned kernels (issue 35 item 3)

AVX2 = "avx2" in (
    _first_cpu(Path("/proc/cpuinfo").read_text()).get("flags", "") if Path("/proc/cpuinfo").exists() else ""
)
PROBE = (
    "import searchvlm, torch; from searchvlm.schema._host import machine; "
    "print(torch.backends.cpu.get_cpu_capability()); print(machine())"
)


def _probe(env: dict[str, str], first: str = "") -> list[str]:
    """torch's capability and `machine()` in a fresh interpreter without the pin's variables
    (plus `env`), after running `first`."""
    clean = {k: v for k, v in os.environ.items() if k not in (*PINS["avx2"], KERNELS_ENV)}
    out = subprocess.run([sys.executable, "-c", first + PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:2]


@pytest.mark.skipif(not AVX2, reason="the CPU has no AVX2")
def test_import_pins_avx2_kernels_and_results_say_so() -> None:
    """`import searchvlm` before torch: torch dispatches to AVX2 kernels and a result records
    `<cpu> [AVX2 kernels]`; `SEARCHVLM_CPU_KERNELS=native` leaves torch its own choice and the
    record the bare CPU model."""
    capability, recorded = _probe({})
    assert capability == "AVX2" and recorded == cpu_model() + " [AVX2 kernels]"
    capability, recorded = _probe({KERNELS_ENV: "native"})
    assert recorded == cpu_model() and capability in ("AVX2", "AVX512", "DEFAULT", "ZVECTOR", "SVE256")
    # numpy loaded before searchvlm keeps its own loops: the record does not claim the pin there
    # (where numpy's own loops are AVX2 anyway, nothing differs and the claim stands)
    _, recorded = _probe({}, first="import numpy; ")
    if _numpy_has_avx512():
        assert recorded == cpu_model()


def _numpy_has_avx512() -> bool:
    """Whether the CPU has AVX-512 (numpy lists the hardware feature even where its loops are off)."""
    from numpy._core._multiarray_umath import __cpu_features__

    return bool(__cpu_features__.get("AVX512F"))


def test_pin_keeps_user_settings_and_refuses_unknown_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in PINS["avx2"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert pin_kernels("native") is None and "ATEN_CPU_CAPABILITY" not in os.environ
    if AVX2:
        with pytest.warns(UserWarning, match="MKL_CBWR='COMPATIBLE' .yours. instead of 'AVX2'"):
            assert pin_kernels("avx2") == "avx2"
        assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "COMPATIBLE"
        assert pinned_level() is None  # not every variable at the pinned value: not pinned
    with pytest.raises(ValueError, match="SEARCHVLM_CPU_KERNELS='avx9'"):
        pin_kernels("avx9")


def test_pinned_rows_from_different_cpus_are_one_class() -> None:
    """Two CPU models that both ran the pinned kernels may be combined; a pinned row and a
    native row of the same CPU may not (nothing shows the native kernels were AVX2)."""
    a, b = "AMD EPYC (family 25, model 1, stepping 1)", OTHER
    assert mixed_cpus({"dense": a + " [AVX2 kernels]", "himix": b + " [AVX2 kernels]"}) is None
    assert mixed_cpus({"t": joined([a + " [AVX2 kernels]", b + " [AVX2 kernels]"])}) is None
    problem = mixed_cpus({"dense": a + " [AVX2 kernels]", "himix": a})
    assert problem is not None and "AVX2 kernels: dense" in problem and f"{a}: himix" in problem
    assert numerics_class(b) == b and numerics_class(b + " [AVX2 kernels]") == "AVX2 kernels"
