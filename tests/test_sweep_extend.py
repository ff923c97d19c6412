"""A real tiny sweep through the CLI in a pipe, then extended and deleted.

- off a terminal the sweep prints one plain line per trial event as it happens (trial
  started; trial finished with its objectives; counts, elapsed time, ETA);
- `sweep --resume --samples 3` extends the finished 2-sample sweep: 3 rows, and the Optuna
  study and MLflow (same parent run) agree; a changed space (file or --set) is refused;
- `runs` lists it and `rm` deletes the folder and its MLflow runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import PY, checkout_env
from helpers.sweeps import check_consistent, tiny_space
from searchvlm.cli import app
from searchvlm.schema.results import read_meta, read_trials

pytestmark = [pytest.mark.slow, pytest.mark.sweep]
runner = CliRunner()
LINE = re.compile(r"^\[\s*\d+(?:s|m\d\ds|h\d\dm)\] sweep tiny: (.*)$")


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 2-sample sweep, its merged output read line by line while it runs."""
    root = tmp_path_factory.mktemp("extend")
    space = tiny_space(root / "tiny.yaml", samples=2, presets=["himix"], calibrated=False)
    cmd = [PY, "-m", "searchvlm", "sweep", str(space), "--runs-dir", str(root / "runs")]
    proc = subprocess.Popen(cmd, cwd=root, env=checkout_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)  # fmt: skip
    lines: list[tuple[str, bool]] = []  # (line, was the sweep still running when it arrived)
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((line.rstrip("\n"), proc.poll() is None))
    assert proc.wait(timeout=600) == 0, "\n".join(ln for ln, _ in lines)[-3000:]
    return {"root": root, "space": space, "runs": root / "runs", "run_dir": root / "runs" / "tiny", "lines": lines}


def _events(lines: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    return [(m.group(1), alive) for ln, alive in lines if (m := LINE.match(ln))]


def test_event_lines_in_a_pipe(piped: dict[str, Any]) -> None:
    rows = {r["trial_id"]: r for r in read_trials(piped["run_dir"] / "trials.csv")}
    events = _events(piped["lines"])
    text = "\n".join(e for e, _ in events)
    assert "\x1b[" not in "\n".join(ln for ln, _ in piped["lines"])  # no live-view escape codes in a log
    assert events[0][0] == "started, 0/2 trials recorded"
    for tid, r in rows.items():
        name = f"t{r['number']:04d}" + (f"-{r['preset']}" if r["preset"] else "")
        started = [e for e, _ in events if e.startswith(f"trial {name} ({tid}) started; ")]
        done = [e for e, _ in events if e.startswith(f"trial {name} ({tid}) ok: ")]
        assert len(started) == 1 and len(done) == 1, text
        assert f"flops_ratio {r['flops_ratio']:.4f}, synergy_gain {r['synergy_gain']:+.4f}" in done[0]
        counts = r"\d/2 done \(\d ok, 0 failed, 0 pruned\), \d running, elapsed \d+s, ETA (\d+s|\?|\d+m\d\ds)"
        assert re.search(counts, done[0])
    finished = [alive for e, alive in events if " ok: " in e]
    assert finished[0], "the first trial's line arrived only after the sweep ended"  # as it happens
    assert events[-1][0].startswith("ended; 2/2 done (2 ok, 0 failed, 0 pruned), 0 running, elapsed ")
    assert any("ETA 0s" in e for e, _ in events)


def _cli(*args: str) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def test_a_changed_space_is_refused(piped: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    runs = str(piped["runs"])
    changed = tmp_path / "tiny.yaml"
    data = yaml.safe_load(piped["space"].read_text())
    data["training"]["steps"] = 30
    changed.write_text(yaml.safe_dump(data))
    for args in ([str(changed)], [str(piped["space"]), "--set", "training.steps=30"]):
        res = _cli("sweep", *args, "--resume", "--samples", "3", "--runs-dir", runs, "--name", "tiny")
        assert res.exit_code == 2 and "differs from the space sweep 'tiny' started with" in res.output, res.output
    res = _cli("sweep", str(piped["space"]), "--resume", "--samples", "1", "--runs-dir", runs)
    shrink = "--samples = 1: sweep 'tiny' has 2 samples; a sweep can be extended, never shrunk"
    assert res.exit_code == 2 and shrink in res.output
    assert len(read_trials(piped["run_dir"] / "trials.csv")) == 2


def test_extend_a_finished_sweep(piped: dict[str, Any]) -> None:
    run_dir, runs = piped["run_dir"], piped["runs"]
    before = {r["trial_id"]: r for r in read_trials(run_dir / "trials.csv")}
    parent = read_meta(run_dir / "sweep.json").parent_run_id
    cmd = [PY, "-m", "searchvlm", "sweep", str(piped["space"]), "--runs-dir", str(runs), "--resume", "--samples", "3"]
    done = subprocess.run(cmd, cwd=piped["root"], env=checkout_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started, 2/3 trials recorded" in done.stderr
    meta = read_meta(run_dir / "sweep.json")
    assert meta.parent_run_id == parent and meta.search["samples"] == 3
    rows = check_consistent(run_dir, "tiny", meta.tracking_uri, runs)  # table, study and MLflow agree
    assert len(rows) == 3 and sorted(r["number"] for r in rows) == [0, 1, 2]
    assert {r["trial_id"]: r for r in rows if r["trial_id"] in before} == before  # old rows untouched
    assert all(r["status"] == "ok" for r in rows)


def test_runs_then_rm_the_real_sweep(piped: dict[str, Any]) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    runs = str(piped["runs"])
    res = _cli("runs", "--runs-dir", runs)
    line = next(ln for ln in res.output.splitlines() if "│ tiny " in ln)
    assert [c.strip() for c in line.strip("│ ").split("│")][:5] == ["tiny", "3/3", "3", "0", "0"]
    uri = read_meta(piped["run_dir"] / "sweep.json").tracking_uri
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("searchvlm").experiment_id
    assert len(client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY)) == 4  # parent + 3 trials
    res = _cli("rm", "tiny", "--runs-dir", runs, "--yes")
    assert res.exit_code == 0 and "4 MLflow runs" in res.output, res.output
    assert not piped["run_dir"].exists()
    assert client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY) == []
