"""Results as data and managing sweeps: `load_trials`, `load_front`, `list_runs` / `runs`,
`compare_runs` / `compare`, `remove_run` / `rm` (with a real sqlite MLflow store).

Tables are written by the real writer (`test_export.make_sweep`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import PY, checkout_env
from helpers.sweeps import make_sweep
from searchvlm.cli import app
from searchvlm.objectives.pareto import front, hypervolume, knee
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.results import SweepMeta, read_meta, read_trials, write_meta

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# a second sweep: one point that beats s1's whole front
TABLE_B = [("dense", 1.0, 0.02), ("himix", 0.3, 0.2), ("hmgen", 0.6, -0.3)]


def cli(*args: str, input: str | None = None):
    res = runner.invoke(app, list(args), input=input)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_sweep(root, "s1")
    make_sweep(root, "s2", table=TABLE_B)
    (root / "cache").mkdir()  # not a sweep: never listed
    return root


# --------------------------------------------------------------------------- the public names


def test_results_and_run_names_are_public() -> None:
    """(That they load lazily, so `import searchvlm` stays light: tests/test_layering.py.)"""
    import searchvlm

    for name in ("load_trials", "load_front", "Front", "list_runs", "compare_runs", "remove_run", "run_sweep"):
        assert name in searchvlm.__all__ and callable(getattr(searchvlm, name))


def test_commands_are_public_functions() -> None:
    """DESIGN: every command is also a function of the package."""
    import searchvlm

    for name in ("run_sweep", "run_trial", "load_trial_config", "export_policy", "export_report", "policy_picture",
                 "pareto_report", "analyze", "run_analysis", "run_reproduce", "run_confirm", "compile_presets",
                 "run_diagnose", "compare_runs", "list_runs", "remove_run", "load_space", "validate_file",
                 "validate_files"):  # fmt: skip
        assert name in searchvlm.__all__ and callable(getattr(searchvlm, name)), name


def test_facade_names_are_not_submodule_names() -> None:
    """Importing `searchvlm.X` sets the package attribute `X` to that module, so a façade
    name that is also a submodule's would turn from the function into the module."""
    import pkgutil

    import searchvlm

    submodules = {m.name for m in pkgutil.iter_modules(searchvlm.__path__)}
    assert not submodules & set(searchvlm.__all__)


def test_run_confirm_stays_the_function_after_importing_its_module() -> None:
    """In a fresh interpreter (this one may have imported searchvlm.records.confirm already): the
    façade's `run_confirm`, resolved before its module is imported, is still that function
    after `import searchvlm.records.confirm`, and the package attribute `confirm` is the module."""
    code = (
        "import sys, types\nimport searchvlm\n"
        "assert 'searchvlm.records.confirm' not in sys.modules, 'imported too early'\n"
        "first = searchvlm.run_confirm\nimport searchvlm.records.confirm\n"
        "assert searchvlm.run_confirm is first is searchvlm.records.confirm.run_confirm, 'run_confirm replaced'\n"
        "assert callable(first) and not isinstance(first, types.ModuleType), 'run_confirm is a module'\n"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=checkout_env(), timeout=120)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- load_trials / load_front


def test_load_trials_is_a_named_dataframe(runs: Path) -> None:
    import pandas as pd

    from searchvlm import ReductionPolicy, load_trials

    df = load_trials("s1", runs_dir=runs)
    rows = read_trials(runs / "s1" / "trials.csv")
    assert isinstance(df, pd.DataFrame) and len(df) == len(rows) == 7  # failed and pruned kept
    assert not any(c.startswith("values_") for c in df.columns)
    assert list(df["number"]) == [r["number"] for r in rows]
    assert list(df["status"]) == [r["status"] for r in rows]
    assert df.loc[df.trial_id == "t2", "synergy_gain"].item() == 0.04
    assert math.isnan(df.loc[df.trial_id == "t5", "flops_ratio"].item())  # the failed trial: NaN, not ""
    assert df.loc[df.trial_id == "t5", "error"].item() == "OOM"
    assert set(df.loc[df.on_front, "trial_id"]) == {r["trial_id"] for r in front(rows)}
    pol = df.loc[df.trial_id == "t1", "policy"].item()
    assert ReductionPolicy.model_validate(pol).name == "himix"
    assert df.loc[df.trial_id == "t1", "params"].item() == {} and df.loc[0, "seeds"] == [0, 1]
    assert df.attrs == {"sweep": "s1", "run_dir": str(runs / "s1")}
    assert load_trials(runs / "s1").equals(df)  # a folder works as well as a name


def test_load_front_matches_pareto(runs: Path) -> None:
    from searchvlm import Front, load_front
    from searchvlm.report import pareto_summary

    rows = read_trials(runs / "s1" / "trials.csv")
    fr = load_front("s1", runs_dir=runs)
    summary = pareto_summary("s1", None, runs)
    assert isinstance(fr, Front) and len(fr) == 3
    ids = list(fr.trials["trial_id"])
    assert ids == [r["trial_id"] for r in front(rows)] == [r["trial_id"] for r in summary["front"]]
    assert fr.knee == knee(rows)["trial_id"] == summary["knee"] == "t2"
    assert fr.hypervolume == pytest.approx(summary["hypervolume"]) and fr.ref == (1.0, 0.05)
    assert fr.counts == {"ok": 5, "failed": 1, "pruned": 1, "incomplete": 0}
    html = fr._repr_html_()
    assert html.startswith("<p>s1: 3 on the front of 7 trials") and "<table" in html
    assert all(f"<td>{t}</td>" in html for t in ("t1", "t2", "t3")) and "<td>*</td>" in html
    assert "knee: t2" in repr(fr)
    other = load_front("s1", ref=(1.0, -1.0), runs_dir=runs)
    assert other.hypervolume == pytest.approx(hypervolume(rows, (1.0, -1.0))[0])
    json.dumps(fr.to_dict())  # JSON-ready


def test_load_trials_unknown_sweep_is_a_config_error(runs: Path) -> None:
    from searchvlm import load_trials

    with pytest.raises(ConfigError, match="no sweep of this name here"):
        load_trials("nosuch", runs_dir=runs)


# --------------------------------------------------------------------------- runs / ls


def test_list_runs(runs: Path) -> None:
    from searchvlm import list_runs

    infos = list_runs(runs)
    assert [r.name for r in infos] == ["s1", "s2"]
    s1 = infos[0]
    assert (s1.trials, s1.ok, s1.failed, s1.pruned, s1.front, s1.best_synergy) == (7, 5, 1, 1, 3, 0.1)
    assert "<td>s2</td>" in infos._repr_html_()
    assert list(infos.to_frame()["name"]) == ["s1", "s2"]


@pytest.mark.parametrize("command", ["runs", "ls"])
def test_runs_command(runs: Path, command: str) -> None:
    res = cli(command, "--runs-dir", str(runs))
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if "│ s1 " in ln)
    assert [c.strip() for c in line.strip("│ ").split("│")][:7] == ["s1", "7", "5", "1", "1", "3", "+0.1000"]
    assert "cache" not in res.output
    data = json.loads(cli(command, "--runs-dir", str(runs), "--json").output)
    assert [(d["name"], d["front"], d["failed"]) for d in data] == [("s1", 3, 1), ("s2", 1, 1)]


def test_runs_missing_folder_is_a_clean_error(tmp_path: Path) -> None:
    res = cli("runs", "--runs-dir", str(tmp_path / "nope"))
    assert res.exit_code == 2 and res.output.startswith(f"error: command line: --runs-dir = '{tmp_path / 'nope'}'")


# --------------------------------------------------------------------------- compare


def test_compare_uses_one_reference_point(runs: Path) -> None:
    from searchvlm import compare_runs

    a, b = read_trials(runs / "s1" / "trials.csv"), read_trials(runs / "s2" / "trials.csv")
    cmp = compare_runs("s1", "s2", runs)
    assert cmp.ref == (1.0, 0.02)  # the lower dense synergy of the two sweeps (s2's), not each its own
    assert cmp.fronts[0].hypervolume == pytest.approx(hypervolume(a, (1.0, 0.02))[0])
    assert cmp.fronts[1].hypervolume == pytest.approx(hypervolume(b, (1.0, 0.02))[0])
    assert cmp.fronts[0].hypervolume != pytest.approx(hypervolume(a)[0])  # own default ref differs
    assert cmp.best[0]["trial_id"] == "t3" and cmp.best[1]["trial_id"] == "t1"
    assert cmp.coverage == (0.0, pytest.approx(2 / 3))  # s2's (0.3, 0.2) covers two of s1's three
    assert "s1" in cmp._repr_html_() and "covers" in cmp._repr_html_()


def test_compare_command(runs: Path) -> None:
    res = cli("compare", "s1", "s2", "--runs-dir", str(runs))
    assert res.exit_code == 0, res.output
    text = res.output

    def row(name: str) -> list[str]:
        line = next(ln for ln in text.splitlines() if f"│ {name} " in ln)
        return [c.strip() for c in line.strip("│ ").split("│")]

    assert row("front size") == ["front size", "3", "1"]
    assert row("failed") == ["failed", "1", "1"]
    assert row("best synergy")[1].startswith("+0.1000 (t3")
    assert "synergy_gain 0.0200 (both sweeps)" in text
    assert "front of s1" in text and "front of s2" in text
    data = json.loads(cli("compare", "s1", "s2", "--runs-dir", str(runs), "--json").output)
    assert data["ref"] == {"flops_ratio": 1.0, "synergy_gain": 0.02}
    assert [s["sweep"] for s in data["sweeps"]] == ["s1", "s2"]
    assert [len(s["front"]) for s in data["sweeps"]] == [3, 1]
    res = cli("compare", "s1", "nosuch", "--runs-dir", str(runs))
    assert res.exit_code == 2 and "RUN = 'nosuch'" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- rm


@pytest.mark.parametrize("name", ["../s1", "/etc", "..", ".", "s1/../s2", "nosuch", "cache"])
def test_rm_refuses_what_is_not_a_sweep_inside_the_runs_dir(runs: Path, name: str) -> None:
    res = cli("rm", name, "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 2 and res.output.startswith(f"error: command line: NAME = {name!r}"), res.output
    assert (runs / "s1").is_dir() and (runs / "s2").is_dir()


def test_rm_refuses_a_link_out_of_the_runs_dir(runs: Path, tmp_path: Path) -> None:
    outside = make_sweep(tmp_path / "elsewhere", "keep")
    (runs / "link").symlink_to(outside)
    res = cli("rm", "link", "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 2 and "leads out of" in res.output
    assert (outside / "trials.csv").exists()


def test_rm_asks_first(runs: Path) -> None:
    res = cli("rm", "s2", "--runs-dir", str(runs), input="n\n")
    assert res.exit_code == 1 and "kept" in res.output and (runs / "s2").is_dir()
    res = cli("rm", "s2", "--runs-dir", str(runs))  # no answer (end of input) is no
    assert res.exit_code == 1 and (runs / "s2").is_dir()
    res = cli("rm", "s2", "--runs-dir", str(runs), input="y\n")
    assert res.exit_code == 0 and not (runs / "s2").exists() and (runs / "s1").is_dir()


def _tracked(runs: Path, name: str, uri: str, n: int) -> str:
    """Give sweep `name` a parent run with `n` children in the MLflow store at `uri`."""
    from searchvlm.tracking import Tracker

    tracker = Tracker(uri, runs)
    parent = tracker.start_sweep(name, runs / name / "sweep.json", {"samples": n})
    for i in range(n):
        tracker.child(f"t{i}", f"t{i:04d}", {"i": i}, {"optuna_number": str(i)})
    tracker.end_sweep()
    meta = read_meta(runs / name / "sweep.json")
    write_meta(runs / name / "sweep.json", meta.model_copy(update={"tracking_uri": uri, "parent_run_id": parent}))
    return parent


def test_rm_deletes_the_mlflow_runs_too(runs: Path) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from searchvlm import remove_run
    from searchvlm.tracking import default_uri

    uri = default_uri(runs)
    gone, kept = _tracked(runs, "s2", uri, 3), _tracked(runs, "s1", uri, 2)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("searchvlm").experiment_id
    live = lambda: {r.info.run_id: r for r in client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY)}  # noqa: E731
    assert len(live()) == 3 + 1 + 2 + 1
    removed = remove_run("s2", runs)
    assert removed.mlflow_runs == 4 and not (runs / "s2").exists()
    left = live()
    assert gone not in left and kept in left and len(left) == 3  # s1's parent and two children
    assert all(r.data.tags.get("mlflow.parentRunId") in (None, kept) for r in left.values())
    res = cli("rm", "s1", "--runs-dir", str(runs), "--yes")
    assert res.exit_code == 0 and "deleted" in res.output and "3 MLflow runs" in res.output
    assert live() == {} and [r.name for r in read_list(runs)] == []


def read_list(runs: Path) -> list:
    from searchvlm import list_runs

    return list(list_runs(runs))


def test_meta_without_mlflow_is_removed_alone(runs: Path) -> None:
    meta = read_meta(runs / "s1" / "sweep.json")
    assert isinstance(meta, SweepMeta) and meta.parent_run_id is None
    res = cli("rm", "s1", "--runs-dir", str(runs), "-y")
    assert res.exit_code == 0 and "deleted" in res.output and "0 MLflow runs" in res.output


def test_load_front_and_compare_rank_the_confirmed_numbers_as_pareto_does(runs: Path) -> None:
    from searchvlm import compare_runs, load_front
    from searchvlm.report import pareto_summary
    from searchvlm.schema.results import CONFIRMED_FILE, write_confirmed

    conf = [{"trial_id": "t2", "number": 2, "status": "ok", "seeds": "[5, 6]", "flops_ratio": 0.5,
             "synergy_gain": 0.01, "synergy_gain_stderr": 0.005, "synergy_per_seed": "[0.005, 0.015]"},
            {"trial_id": "t3", "number": 3, "status": "ok", "seeds": "[5, 6]", "flops_ratio": 0.8,
             "synergy_gain": 0.011, "synergy_gain_stderr": 0.005, "synergy_per_seed": "[0.004, 0.018]"}]  # fmt: skip
    write_confirmed(runs / "s1" / CONFIRMED_FILE, conf)
    summary = pareto_summary("s1", None, runs)
    fr = load_front("s1", runs_dir=runs)
    assert summary["numbers"] == "confirmed"
    assert list(fr.trials["trial_id"]) == [r["trial_id"] for r in summary["front"]]
    assert fr.hypervolume == pytest.approx(summary["hypervolume"]) and fr.ref == tuple(summary["ref"].values())
    assert fr.counts == {"ok": 5, "failed": 1, "pruned": 1, "incomplete": 0}  # every trial still counted
    cmp = compare_runs("s1", "s2", runs)
    assert list(cmp.fronts[0].trials["trial_id"]) == list(fr.trials["trial_id"])
    assert cmp.best[0]["trial_id"] == "t3" and cmp.best[0]["synergy_gain"] == 0.011  # not the search's 0.10


# --------------------------------------------------------------------------- one driver per sweep


def test_a_running_sweep_refuses_a_second_driver_and_rm(runs: Path, tmp_path: Path) -> None:
    """While a driver holds a sweep (`driver_lock`), a second `run_sweep` on it (a `--resume`
    while it runs) stops with one error naming the holder, before Ray starts or anything is
    written, and `rm` refuses it; once the driver ends, both go ahead, and a later refusal
    names no one who has left. `rm` holds the same lock while it removes."""
    from helpers.sweeps import tiny_space
    from searchvlm import remove_run
    from searchvlm.schema.results import lock_path
    from searchvlm.sweep import run_sweep
    from searchvlm.sweep._rundir import driver_lock

    space = tiny_space(tmp_path / "tiny.yaml")
    before = sorted(p.name for p in (runs / "s2").iterdir())
    with driver_lock(runs / "s2"):
        assert lock_path(runs / "s2").read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(ConfigError, match=r"is running \(pid \d+ on .* since .*; lock .*\): wait for it"):
            run_sweep(space, name="s2", runs_dir=runs, resume=True, progress=False)
        with pytest.raises(ConfigError, match=r"is running .*: stop it first"):
            remove_run("s2", runs)
        res = cli("rm", "s2", "--runs-dir", str(runs), "--yes")
        assert res.exit_code == 2 and "is running" in res.output and (runs / "s2").exists()
    assert sorted(p.name for p in (runs / "s2").iterdir()) == before  # nothing written
    assert lock_path(runs / "s2").read_text() == ""  # released: the holder's line cleared
    with driver_lock(runs / "s1"), pytest.raises(ConfigError, match="is running"):
        with driver_lock(runs / "s1"):  # the same sweep twice (another open file: flock refuses it)
            pass
    remove_run("s2", runs)
    assert not (runs / "s2").exists() and lock_path(runs / "s2").exists()  # kept: never a sweep
    assert [r.name for r in read_list(runs)] == ["s1"]
