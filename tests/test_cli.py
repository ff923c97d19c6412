"""The command line's conventions: --version, `python -m`, completion, enum choices, clean
argument errors (exit 2, `error:` lines naming the right source), `export --trial` and
`--force`, and tables that keep every number whole off a terminal (pipes, CI, nohup).

The fast tests read trials tables written by the real writer (`test_export.make_sweep`);
the `slow` ones run one real tiny sweep (Ray Tune + Optuna + MLflow) and read it back
through a shell pipe.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import PY, ROOT, checkout_env
from helpers.sweeps import make_sweep, tiny_space
from searchvlm import __version__
from searchvlm.cli import app
from searchvlm.schema.results import read_trials

runner = CliRunner()


def cli(*args: str, **env: str) -> Any:
    res = runner.invoke(app, list(args), env=env or None)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def assert_cli_error(res: Any, *needles: str) -> None:
    """Exit 2, no traceback, only `error:` lines, each needle somewhere in them."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), res.output
    for n in needles:
        assert n in res.output, res.output


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "runs")


# --------------------------------------------------------------------------- conventions


def test_version() -> None:
    res = cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"searchvlm {__version__}"


def test_python_m_searchvlm() -> None:
    done = subprocess.run([PY, "-m", "searchvlm", "--version"], capture_output=True, text=True, env=checkout_env(),
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == f"searchvlm {__version__}", done.stderr
    done = subprocess.run([PY, "-m", "searchvlm", "--help"], capture_output=True, text=True, env=checkout_env(),
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "Usage: searchvlm" in done.stdout and "export" in done.stdout


def _complete(words: str) -> list[str]:
    """What bash completion offers after `words` (the protocol the installed script speaks)."""
    env = {**checkout_env(), "_SEARCHVLM_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}  # fmt: skip
    done = subprocess.run([PY, "-m", "searchvlm"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_is_enabled() -> None:
    assert "--install-completion" in cli("--help", COLUMNS="200").output
    # typer finds the shell among the process's ancestors (shellingham); under `make` the nearest
    # one is /bin/sh, which typer does not support, so the script is asked for from a bash
    # (`; exit $?` keeps bash from exec-ing python, so bash stays its parent)
    command = f"{shlex.quote(PY)} -m searchvlm --show-completion; exit $?"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=checkout_env(), cwd=ROOT,
                          timeout=120)  # fmt: skip
    assert "complete -o default -F _searchvlm_completion searchvlm" in done.stdout, (done.returncode, done.stderr)
    assert _complete("searchvlm ex") == ["export"]
    assert _complete("searchvlm export x --rule ") == ["knee", "max-synergy", "min-flops", "decision"]


def test_export_offers_the_pareto_rules() -> None:
    res = cli("export", "--help", COLUMNS="200")
    assert res.exit_code == 0 and "knee|max-synergy|min-flops|decision" in res.output


def test_rule_typo_is_blamed_on_the_command_line(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    res = cli("export", str(run), "--rule", "kne", "-o", str(out))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.startswith("error: command line: --rule: 'kne' is not one of"), res.output
    assert "trials.csv" not in res.output and not out.exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["presets", "--layers", "0"], ["command line: --layers = 0: must be a layer count of at least 1"]),
        (["presets", "--layers", "-3"], ["--layers = -3"]),
        (["presets", "--layers", "1"], ["--layers = 1: preset 'fastv' does not fit this depth"]),
        (["trial", "{space}", "--preset", "dense", "--seeds", "a"], ["command line: --seeds = 'a': expected"]),
        (["reproduce", "{space}", "--seeds", "0,,1"], ["--seeds = '0,,1'"]),
    ],
)
def test_bad_numbers_are_clean_errors(args: list[str], needles: list[str]) -> None:
    space = str(ROOT / "search_spaces" / "quick.yaml")
    assert_cli_error(cli(*(a.format(space=space) for a in args)), *needles)


@pytest.mark.parametrize("command", ["pareto", "export"])
def test_unknown_sweep_names_the_runs_folder(command: str, run: Path, tmp_path: Path) -> None:
    runs = run.parent
    out = ["-o", str(tmp_path / "p.json")] if command == "export" else []
    args = [command, "nosuch", "--runs-dir", str(runs), *out]
    res = cli(*args)
    assert_cli_error(res, f"error: {runs}: RUN = 'nosuch': no sweep of this name here (sweeps: s1)")
    assert "<input>" not in res.output


def test_one_handler_prints_every_commands_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No command catches ConfigError itself: the command group prints it (exit 2, one
    `error:` line per problem), also from a library call deep inside a command."""
    import searchvlm.train.trial
    from searchvlm.schema.errors import ConfigError

    def refuse(config: Any, progress: Any = None) -> None:
        raise ConfigError.many("space.yaml", [("model.hf", "x", "not a folder"), ("data.tokens", 0, "too few")])

    monkeypatch.setattr(searchvlm.train.trial, "run_trial", refuse)
    res = cli("trial", str(ROOT / "search_spaces" / "quick.yaml"), "--preset", "dense")
    assert_cli_error(res, "error: space.yaml: model.hf = 'x': not a folder", "data.tokens = 0: too few")
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 2, res.output


# --------------------------------------------------------------------------- export


def test_export_trial_by_number_and_id(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    res = cli("export", str(run), "--trial", "4", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "t4"  # dominated: no rule picks it
    assert "trial t4, number 4, chosen" in res.output
    res = cli("export", "s1", "--runs-dir", str(run.parent), "--trial", "t1", "-o", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "t1"


def test_export_refuses_to_overwrite_without_force(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    out.write_text("my policy\n")
    before = out.stat().st_mtime_ns
    res = cli("export", str(run), "-o", str(out))
    assert_cli_error(res, f"error: command line: --output = {str(out)!r}: exists; pass --force")
    assert out.read_text() == "my policy\n" and out.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "runs"]
    res = cli("export", str(run), "-o", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["provenance"]["trial_id"] == "t2"  # the knee


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--trial", "99"], "--trial = '99': no trial with this id or number (numbers 0..6)"),
        (["--trial", "5"], "has status 'failed' (OOM)"),
        (["--trial", "2", "--rule", "knee"], "command line: --trial = '2': names the trial itself"),
        (["--trial", "2", "--max-flops", "0.5"], "give it without --max-flops/--min-synergy"),
    ],
)
def test_export_trial_errors(run: Path, tmp_path: Path, extra: list[str], needle: str) -> None:
    out = tmp_path / "p.json"
    assert_cli_error(cli("export", str(run), "-o", str(out), *extra), needle)
    assert not out.exists()


# --------------------------------------------------------------------------- tables off a terminal


def _front_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    from searchvlm.objectives.pareto import front
    from searchvlm.report import front_table

    return [list(r.values()) for r in front_table(front(rows))]


def assert_table_whole(text: str, rows: list[dict[str, Any]]) -> None:
    """Every front row on one line with every cell complete (synergy to 4 decimals, the
    policy summary); nothing cut to `…`."""
    assert "…" not in text and "..." not in text, text
    cells = _front_cells(rows)
    assert cells
    lines = text.splitlines()
    for row in cells:
        line = next((ln for ln in lines if f"│ {row[0]} " in ln), None)
        assert line is not None, (row[0], text)
        got = [c.strip() for c in line.strip("│ ").split("│")]
        assert got == row, (got, row)
        assert re.fullmatch(r"[+-]\d\.\d{4}", row[4])  # the synergy gain: sign and 4 decimals


def test_pareto_table_whole_through_cli_runner(run: Path) -> None:
    res = cli("pareto", str(run), "--no-plots", COLUMNS="80")
    assert res.exit_code == 0, res.output
    assert_table_whole(res.stdout, read_trials(run / "trials.csv"))
    assert max(len(ln) for ln in res.stdout.splitlines()) > 80  # wider than the pipe's 80 columns
    hv = "hypervolume 0.0100 (reference: flops_ratio 1.000, synergy_gain 0.0500 = the dense trial's); knee: t2"
    assert hv in res.stdout


def test_other_tables_whole_off_a_terminal() -> None:
    res = cli("presets", "--layers", "12", COLUMNS="40")
    assert res.exit_code == 0 and "…" not in res.output
    from searchvlm.schema.policy import preset

    keep = " ".join(f"{k:.2g}" for k in preset("pmod", 12).understanding.keep)
    assert f"skip/router {keep}" in res.output  # twelve ratios on one line


# --------------------------------------------------------------------------- a real tiny sweep


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3-trial sweep (one preset, two sampled policies) through the CLI: quick.yaml
    shrunk to seconds per trial (`tiny_space`: 20 steps, evaluation every 10, small sets)."""
    root = tmp_path_factory.mktemp("cli_sweep")
    space = tiny_space(root / "tiny.yaml", samples=3, presets=["himix"])
    cmd = [PY, "-m", "searchvlm", "sweep", str(space), "--runs-dir", str(root / "runs")]
    done = subprocess.run(cmd, cwd=root, env=checkout_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "sweep.stderr").write_text(done.stderr)  # the summary the sweep printed, as a log holds it
    return root / "runs" / "tiny"


def _sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=checkout_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
@pytest.mark.sweep
def test_real_sweep_pareto_piped_through_cat(real_sweep: Path) -> None:
    done = _sh(f"{PY} -m searchvlm pareto tiny --runs-dir {real_sweep.parent} --no-plots | cat", real_sweep)
    assert done.returncode == 0, done.stderr
    rows = read_trials(real_sweep / "trials.csv")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert_table_whole(done.stdout, rows)


@pytest.mark.slow
@pytest.mark.sweep
def test_real_sweep_summary_table_whole_in_a_log(real_sweep: Path) -> None:
    log = (real_sweep.parents[1] / "sweep.stderr").read_text()
    assert "sweep tiny: Pareto front" in log and "…" not in log
    assert f"\noptuna-dashboard sqlite:///{real_sweep / 'optuna.db'}\n" in log  # a command to copy, unbroken
    # the libraries' set-up chatter is in sweep.log, not in the output; the proxy warning once
    assert "INFO mlflow" not in log and "authentication" not in log.lower(), log[:2000]
    assert log.count("does not beat both isolated baselines") <= 1 and log.count("is unmeasured") <= 1
    from searchvlm.objectives.pareto import front

    for r in front(read_trials(real_sweep / "trials.csv")):
        line = next((ln for ln in log.splitlines() if f" {r['trial_id']} " in ln), None)
        assert line is not None, log
        assert f"{r['flops_ratio']:.4f}" in line and f"{r['synergy_gain']:.4f}" in line, line


@pytest.mark.slow
@pytest.mark.sweep
def test_real_sweep_export_chosen_trial(real_sweep: Path, tmp_path: Path) -> None:
    rows = {r["number"]: r for r in read_trials(real_sweep / "trials.csv")}
    out = tmp_path / "p.json"
    done = _sh(f"{PY} -m searchvlm export {real_sweep} --trial 1 -o {out} | cat", tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["provenance"]["trial_id"] == rows[1]["trial_id"] and data["provenance"]["trial_number"] == 1
    assert data["objectives"]["synergy_gain"] == rows[1]["synergy_gain"]
    again = _sh(f"{PY} -m searchvlm export {real_sweep} --trial {rows[0]['trial_id']} -o {out}", tmp_path)
    assert again.returncode == 2 and again.stderr.startswith("error: command line: --output")
    assert json.loads(out.read_text()) == data  # untouched


@pytest.mark.slow
@pytest.mark.sweep
def test_real_sweep_study_names_metrics_and_trial_ids(real_sweep: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{real_sweep / 'optuna.db'}")
    assert study.metric_names == ["flops_ratio", "synergy_gain"]
    ids = {r["number"]: r["trial_id"] for r in read_trials(real_sweep / "trials.csv")}
    assert {t.number: t.user_attrs.get("searchvlm_trial_id") for t in study.trials} == ids


# --------------------------------------------------------------------------- --set and --print-config

QUICK = ROOT / "search_spaces" / "quick.yaml"


@pytest.mark.parametrize("command", [["trial", str(QUICK), "--preset", "dense"], ["sweep", str(QUICK)],
                                     ["reproduce", str(QUICK)]])  # fmt: skip
def test_set_overrides_and_print_config(command: list[str]) -> None:
    import yaml

    res = cli(*command, "--set", "training.steps=7", "--set", "seeds=[3, 4]", "--set", "synergy.at=final",
              "--print-config")  # fmt: skip
    assert res.exit_code == 0, res.output
    config = yaml.safe_load(res.stdout)
    assert config["training"]["steps"] == 7 and config["seeds"] == [3, 4] and config["synergy"]["at"] == "final"
    assert (
        config["training"]["eval_every"] == yaml.safe_load(QUICK.read_text())["training"]["eval_every"]
    )  # the file's own
    if command[0] == "trial":
        assert config["policy"]["name"] == "dense"


def test_print_config_applies_samples_on_sweep() -> None:
    import yaml

    res = cli("sweep", str(QUICK), "--samples", "3", "--set", "search.sampler=random", "--print-config")
    search = yaml.safe_load(res.stdout)["search"]
    assert res.exit_code == 0 and search["samples"] == 3 and search["sampler"] == "random"


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["training.stepz=7"], ["error: command line: --set training.stepz = 7: Extra inputs are not permitted"]),
        (
            ["training.steps=-1"],
            ["command line: --set training.steps = -1: Input should be greater than or equal to 1"],
        ),
        (["search.samples=abc", "seeds=[]"], ["--set search.samples = 'abc'", "--set seeds = []"]),
        (["nokey"], ["command line: --set = 'nokey': expected key.path=value"]),
        (["model.num_layers.x=2"], ["--set model.num_layers.x = 2: model.num_layers holds a int value"]),
        (["training.lr=.nan"], ["--set training.lr = nan: must be a finite number"]),
        (
            ["search.scheduler={kind: mo_asha, grace_steps: 900}"],
            ["--set search.scheduler.grace_steps = 900: must be <"],
        ),
    ],
)
@pytest.mark.parametrize("command", ["trial", "sweep", "reproduce"])
def test_bad_set_is_named(command: str, sets: list[str], needles: list[str]) -> None:
    extra = ["--preset", "dense"] if command == "trial" else []
    args = [command, str(QUICK), *extra, *(x for s in sets for x in ("--set", s)), "--print-config"]
    assert_cli_error(cli(*args), *needles)


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_calibrate_proxy_uses_the_library_set(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "calibrate_proxy.py"
    assert "validate_overridden" in script.read_text() and "def _parse_value" not in script.read_text()
    cmd = [PY, str(script), str(QUICK), "--set", "data.train_sizee=5", "--out", str(tmp_path / "o.json")]
    done = subprocess.run(cmd,
                          capture_output=True, text=True, env=checkout_env(), cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "error: command line: --set data.train_sizee = 5" in done.stderr
    assert not (tmp_path / "o.json").exists()


# --------------------------------------------------------------------------- validate FILE... and --json


def _bad_space(path: Path) -> Path:
    """Field errors in `search` and `training`-free sections, and a cross-section error in `policy`."""
    import yaml

    data = yaml.safe_load(QUICK.read_text())
    data["search"]["samples"] = 0  # a field check
    data["search"]["samplerr"] = "tpe"  # another
    data["policy"]["understanding"]["schedules"][0]["start"] = {"type": "int", "low": 1, "high": 9}  # cross: L = 4
    path.write_text(yaml.safe_dump(data))
    return path


def test_validate_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    bad = _bad_space(tmp_path / "bad.yaml")
    broken = tmp_path / "p.json"
    broken.write_text('{"num_layers": 2, "understanding": {"keep": [1.0, 2.0]}}')
    res = cli("validate", str(bad), str(QUICK), str(broken))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{QUICK}: valid search space" in res.stdout  # the good file between two bad ones
    err = res.stderr
    assert f"error: {bad}: search.samples = 0:" in err and f"error: {bad}: search.samplerr = 'tpe'" in err
    assert f"error: {bad}: policy.understanding.schedules[0].start = " in err  # the cross check ran too
    assert f"error: {broken}: understanding.keep[1] = 2.0" in err
    assert cli("validate", str(QUICK)).exit_code == 0


def test_validate_json(tmp_path: Path) -> None:
    bad = _bad_space(tmp_path / "bad.yaml")
    res = cli("validate", str(QUICK), str(bad), "--json")
    assert res.exit_code == 2
    data = json.loads(res.stdout)
    assert [d["valid"] for d in data] == [True, False]
    keys = {p["key"] for p in data[1]["problems"]}
    assert {"search.samples", "search.samplerr", "policy.understanding.schedules[0].start"} <= keys
    assert all(p["source"] == str(bad) for p in data[1]["problems"])


def test_presets_at_12_layers_show_the_study_rows() -> None:
    """HMGen K=3 and K=5 are distinct rows; share all keeps HMGen's image/text q/k/v split in
    the full layers; share partial splits it per task; nothing is clipped at this depth."""
    res = cli("presets", "--layers", "12")
    assert res.exit_code == 0, res.output
    rows = {ln.split("│")[1].strip(): ln for ln in res.stdout.splitlines() if ln.count("│") == 5}
    assert "skip/stride 1 1 1 0 1 0 1 0 1 1 1 1" in rows["hmgen"]
    assert "skip/stride 1 0 1 0 1 0 1 0 1 0 1 1" in rows["hmgen5"]
    assert "qkv=modality mlp=shared in layers 0,1,2,4,6,8,9,10,11" in rows["himix_hmgen"]
    assert "qkv=task_image mlp=shared in layers 0,1,2,4,6,8,9,10,11" in rows["himix_hmgen_partial"]
    assert "clipped" not in res.stdout
    res = cli("presets", "--layers", "8")
    assert "hmgen5 on 8 layers: K=5 clipped to K=3 (5 shallow layers alternating with full ones need 11 layers)" in (
        res.stdout
    )


def test_presets_json() -> None:
    from searchvlm.schema.policy import PRESETS, ReductionPolicy, preset

    res = cli("presets", "--layers", "6", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert list(data) == list(PRESETS)
    assert ReductionPolicy.model_validate(data["pmod"]) == preset("pmod", 6)
