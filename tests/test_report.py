"""Tests of searchvlm.report: PNGs not blank, offline HTML rendered in a real browser, summary."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import searchvlm.objectives.pareto
import searchvlm.schema.results
from helpers.sweeps import make_sweep
from searchvlm.report import (
    front_table,
    importance_plots,
    pareto_plots,
    pareto_summary,
    plots_current,
    policy_png,
    policy_summary,
)
from searchvlm.schema.results import read_trials, trial_row, write_trials
from searchvlm.schema.trial_result import TrialResult


def _not_blank(path: Path, min_std: float = 0.02) -> float:
    from matplotlib.image import imread

    img = np.asarray(imread(path), dtype=float)  # (H, W, C) in [0, 1]
    gray = img[..., :3].mean(axis=-1) if img.ndim == 3 else img
    assert gray.std() > min_std, f"{path} looks blank (pixel std {gray.std():.4f})"
    return float(gray.std())


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return make_sweep(tmp_path / "runs")


def test_pareto_plots_files(run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="searchvlm.report"):
        paths = pareto_plots(run, tmp_path / "out")
    assert set(paths) == {"front_png", "front_html", "plotly_js", "hypervolume_png"}
    assert all(p.parent == tmp_path / "out" and p.stat().st_size > 0 for p in paths.values())
    _not_blank(paths["front_png"])
    _not_blank(paths["hypervolume_png"])
    assert "no Optuna study" in caplog.text and "importance skipped" in caplog.text
    html = paths["front_html"].read_text()
    # one shared plotly.min.js beside the report (offline), not 4.8 MB inside every file
    assert re.findall(r'<script[^>]*\bsrc="([^"]+)"', html) == ["plotly.min.js"]
    from plotly.offline import get_plotlyjs

    assert paths["plotly_js"].name == "plotly.min.js" and paths["plotly_js"].read_text() == get_plotlyjs()
    assert len(html) < 100_000
    assert 'id="pareto-front"' in html and 'document.getElementById("pareto-front")' in html
    assert "himix" in html and "t3" in html and "OOM" in html  # hover data: ids, presets, errors


def _figure(html: Path) -> dict:
    """The plotly figure (data, layout) written into a report HTML."""
    text = html.read_text()
    start = text.index("Plotly.newPlot(")
    args = json.JSONDecoder().raw_decode(text, text.index("[", start))[0]  # the data list
    return {"data": args}


def test_front_html_knee_presets_and_hover(run: Path, tmp_path: Path) -> None:
    traces = {t["uid"]: t for t in _figure(pareto_plots(run, tmp_path / "out")["front_html"])["data"]}
    # the knee export picks by default (t2 = number 2, FLOPs 0.5, synergy 0.04), marked by a star
    assert traces["knee"]["x"] == [0.5] and traces["knee"]["y"] == [0.04]
    assert traces["knee"]["marker"]["symbol"] == "star" and "export default (#2)" in traces["knee"]["name"]
    # each preset its own trace, legend entry and marker symbol (not text only)
    presets = {u: t for u, t in traces.items() if u.startswith("preset-")}
    assert sorted(presets) == ["preset-dense", "preset-fastv", "preset-himix", "preset-hmgen", "preset-pmod"]
    assert len({t["marker"]["symbol"] for t in presets.values()}) == 5
    assert presets["preset-himix"]["x"] == [0.24] and presets["preset-himix"]["name"] == "preset himix"
    # hover: number, id, per-task gains, accuracy and NLL
    front = traces["front"]
    hmgen = front["customdata"][front["x"].index(0.5)]
    assert hmgen[:3] == ["t2", "2", "hmgen"] and hmgen[4:8] == ["+0.0400", "+0.0900", "0.7000", "2.5000"]
    for key in ("trial #%{customdata[1]}", "und gain", "gen gain", "und acc", "gen NLL"):
        assert key in front["hovertemplate"]


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure saved from now on (to read what a PNG shows)."""
    from matplotlib.figure import Figure

    saved: list = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), real(self, *a, **k))[1])
    return saved


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_front_png_marks_the_knee(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = _drawn(monkeypatch)
    pareto_plots(run, tmp_path / "out")
    fig = saved[0]
    assert "knee, export default (#2)" in _legend(fig) and "failed / pruned (2)" in _legend(fig)
    knee = next(c for c in fig.axes[0].collections if c.get_label() == "knee, export default (#2)")
    assert knee.get_offsets().tolist() == [[0.5, 0.04]]


def test_no_failed_band_without_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "s1"
    make_sweep(tmp_path / "runs")
    write_trials(run / "trials.csv", [r for r in read_trials(run / "trials.csv") if r["status"] == "ok"])
    saved = _drawn(monkeypatch)
    paths = pareto_plots(run, tmp_path / "out")
    ax = saved[0].axes[0]
    assert not any("failed" in t for t in _legend(saved[0]))
    assert not any("failed" in t.get_text() for t in ax.texts)
    assert all(ln.get_linestyle() != ":" for ln in ax.get_lines())  # the band is a dotted line
    html = paths["front_html"].read_text()
    assert "failed" not in html.split("plotly.min.js", 1)[1]
    assert "failed" not in {t["uid"] for t in _figure(paths["front_html"])["data"]}


def test_pareto_skips_unchanged_plots_and_mlflow(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pareto` redraws and re-logs only when trials.csv changed (or --force)."""
    from typer.testing import CliRunner

    import searchvlm.cli as cli
    import searchvlm.report._pareto as command

    logged: list[dict] = []
    monkeypatch.setattr(command, "_log_report", lambda summary, paths: logged.append(dict(paths)))
    runner = CliRunner()
    args = ["pareto", "s1", "--runs-dir", str(run.parent)]
    assert runner.invoke(cli.app, args).exit_code == 0 and len(logged) == 1
    html = run / "report" / "pareto_front.html"
    first = html.stat().st_mtime_ns
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 0 and "plots unchanged" in res.output and len(logged) == 1
    assert html.stat().st_mtime_ns == first and plots_current(run) is not None
    assert plots_current(run, ref=(1.0, -0.2)) is None  # another reference point: other plots
    assert runner.invoke(cli.app, [*args, "--force"]).exit_code == 0 and len(logged) == 2
    rows = read_trials(run / "trials.csv")
    write_trials(run / "trials.csv", rows[:-1])  # the table changed: drawn and logged again
    assert plots_current(run) is None
    assert runner.invoke(cli.app, args).exit_code == 0 and len(logged) == 3
    (run / "report" / "pareto_front.png").unlink()  # a file gone: drawn again
    assert plots_current(run) is None


def test_pareto_report_reads_the_sweep_once(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One read of trials.csv, one front and one hypervolume serve the summary, the table and
    the plots, and they agree with the separate functions."""
    import searchvlm.report as report
    import searchvlm.report._pareto as command

    calls = {"read_trials": 0, "front": 0, "hypervolume": 0}

    def counted(name: str):
        real = getattr(searchvlm.objectives.pareto if name != "read_trials" else searchvlm.schema.results, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    modules = [m for n, m in sys.modules.items() if n.startswith("searchvlm.report.")]
    for name in calls:  # wherever a module of the report package calls it
        for module in modules:
            if getattr(module, name, None) is not None:
                monkeypatch.setattr(module, name, counted(name))
    monkeypatch.setattr(command, "_log_report", lambda summary, paths: None)
    got = report.pareto_report(run)
    assert calls == {"read_trials": 1, "front": 1, "hypervolume": 1}
    monkeypatch.undo()
    assert got.summary == pareto_summary(run) and got.table == front_table(read_trials(run / "trials.csv"))
    assert set(got.plots) >= {"front_png", "front_html", "hypervolume_png"} and not got.plots_unchanged
    assert report.pareto_report(run).plots_unchanged


def test_policy_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from searchvlm.schema.policy import preset

    saved = _drawn(monkeypatch)
    pol = preset("himix_hmgen_partial", 6)
    path = policy_png(pol, tmp_path / "p.png", "my title")
    _not_blank(path)
    ax = saved[0].axes[0]
    grid = ax.get_images()[0].get_array()  # (layers, task)
    assert grid.shape == (6, 2) and grid[:, 0].tolist() == pol.understanding.keep
    assert grid[:, 1].tolist() == pol.generation.keep
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"understanding\n{pol.understanding.mode} / {pol.understanding.selector}",
                      f"generation\n{pol.generation.mode} / {pol.generation.selector}"]  # fmt: skip
    assert "my title" in ax.get_title() and f"qkv {pol.sharing.qkv}" in ax.get_title()


def test_export_and_show_write_the_policy_picture(run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from searchvlm.cli import app

    runner = CliRunner()
    out = tmp_path / "policy.json"
    res = runner.invoke(app, ["export", "s1", "--runs-dir", str(run.parent), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "policy.png").exists() and "policy.png" in res.output
    _not_blank(tmp_path / "policy.png")
    res = runner.invoke(app, ["show", str(out), "-o", str(tmp_path / "pic" / "x.png")])
    assert res.exit_code == 0 and (tmp_path / "pic" / "x.png").exists(), res.output
    res = runner.invoke(app, ["show", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "missing.json" in res.output


def test_pareto_plots_default_dir_and_all_failed(tmp_path: Path) -> None:
    run = tmp_path / "dead"
    rows = [trial_row(TrialResult(status="failed", error="boom"), f"t{i}", i) for i in range(3)]
    write_trials(run / "trials.csv", rows)
    paths = pareto_plots(run)
    assert all(p.exists() and p.parent == run / "report" for p in paths.values())
    summary = pareto_summary(run)
    assert summary["front"] == [] and summary["knee"] is None and summary["hypervolume"] == 0.0
    assert summary["counts"] == {"ok": 0, "failed": 3, "pruned": 0, "incomplete": 0}


def test_pareto_summary_json(run: Path) -> None:
    s = pareto_summary(run)
    json.dumps(s, allow_nan=False)
    assert s["sweep"] == "s1" and s["trials"] == 7 and s["knee"] == "t2"
    assert [r["trial_id"] for r in s["front"]] == ["t1", "t2", "t3"]
    # the default reference synergy is the dense preset trial's (0.05), not the worst seen (-0.10)
    assert s["ref"] == {"flops_ratio": 1.0, "synergy_gain": 0.05} and s["ref_is_default"]
    assert s["ref_source"] == "dense"
    # only pmod (0.8, 0.10) is cheaper than dense AND above its synergy: (1-0.8)*(0.10-0.05)
    assert s["hypervolume"] == pytest.approx(0.01)
    assert [h["number"] for h in s["history"]] == list(range(7))
    assert s["history"][-1]["hypervolume"] == pytest.approx(0.01)
    user = pareto_summary(run, ref=(1.0, -0.10))
    assert not user["ref_is_default"] and user["ref_source"] == "user"
    # (1-0.5)*(0.04+0.10) + (1-0.8)*(0.10-0.04) = 0.07 + 0.012
    assert user["hypervolume"] == pytest.approx(0.082)


def test_front_table(run: Path) -> None:
    table = front_table(read_trials(run / "trials.csv"))
    assert [r["trial"] for r in table] == ["t1", "t2", "t3"]
    assert [r["knee"] for r in table] == ["", "*", ""]
    assert table[0]["preset"] == "himix" and table[0]["FLOPs ratio"] == "0.240"
    assert "query_drop" in table[0]["policy"] and "0×3" in table[0]["policy"]
    assert policy_summary("") == "(no policy recorded)" and policy_summary("{") == "(unreadable policy)"


def _make_study(db: Path, name: str, n: int, named: bool = True) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{db}",
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    if named:
        with pytest.warns(optuna.exceptions.ExperimentalWarning):
            study.set_metric_names(["flops_ratio", "synergy_gain"])
    for _ in range(n):
        t = study.ask()
        keep = t.suggest_float("und.keep", 0.0, 1.0)
        mode = t.suggest_categorical("gen.mode", ["skip", "query_drop"])
        study.tell(t, [keep, -keep + (0.3 if mode == "skip" else 0.0)])


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_importance_from_study(run: Path, tmp_path: Path) -> None:
    _make_study(run / "optuna.db", "s1", 12)
    paths = pareto_plots(run, tmp_path / "out")
    assert {"importance_flops_ratio", "importance_synergy_gain"} <= set(paths)
    _not_blank(paths["importance_flops_ratio"])


def test_importance_of_an_unnamed_study_takes_the_recorded_objectives(run: Path, tmp_path: Path) -> None:
    """A study made before sweeps named their metrics: sweep.json's objectives name the files."""
    from searchvlm.schema.results import read_meta, write_meta

    _make_study(run / "optuna.db", "s1", 12, named=False)
    paths, _ = importance_plots(run, tmp_path, "s1")
    assert set(paths) == {"importance_objective_0", "importance_objective_1"}  # nothing says better
    meta = read_meta(run / "sweep.json")
    objectives = [{"name": "flops_ratio", "mode": "min"}, {"name": "synergy_gain", "mode": "max"}]
    write_meta(run / "sweep.json", meta.model_copy(update={"objectives": objectives}))
    paths, _ = importance_plots(run, tmp_path, "s1")
    assert set(paths) == {"importance_flops_ratio", "importance_synergy_gain"}
    assert paths["importance_flops_ratio"].name == "importance_flops_ratio.png"


def test_importance_skips_small_or_missing_study(run: Path, tmp_path: Path) -> None:
    _make_study(run / "optuna.db", "s1", 3)
    paths, reason = importance_plots(run, tmp_path, "s1")
    assert paths == {} and reason is not None and "3 complete trials" in reason
    paths, reason = importance_plots(run, tmp_path, "other")
    assert paths == {} and reason is not None and "no study 'other'" in reason and "s1" in reason


# --------------------------------------------------------------------------- real browser


def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if exe is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if "CI" in os.environ:
            pytest.fail(f"{reason}; CI={os.environ['CI']!r} requires the browser test to run")
        pytest.skip(reason)
    return exe


def _headless(exe: str, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--window-size=1200,800",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def _points_per_trace(dom: str) -> dict[str, int]:
    """`path.point` elements inside each plotly scatter trace group, keyed by the trace uid."""
    parts = re.split(r'<g class="trace scatter trace([\w-]+)"', dom)
    point = re.compile(r'<path class="point(?: [^"]*)?"')  # plotly adds e.g. plotly-customdata
    return {uid: len(point.findall(body)) for uid, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_front_html_in_browser(run: Path, tmp_path: Path) -> None:
    exe = _chromium()
    html = pareto_plots(run, tmp_path / "out")["front_html"]
    rows = read_trials(run / "trials.csv")
    with tempfile.TemporaryDirectory() as profile:
        dom = _headless(exe, profile, "--dump-dom", html.as_uri()).stdout
    assert 'class="main-svg"' in dom, "plotly did not render"
    counts = _points_per_trace(dom)
    presets = {f"preset-{r['preset']}": 1 for r in rows if r["preset"]}
    assert counts == {"dominated": 2, "front": 3, "failed": 2, **presets, "knee": 1}  # overlays: one marker each
    assert counts["dominated"] + counts["front"] + counts["failed"] == len(rows)
    assert "preset himix" in dom and "knee, export default (#2)" in dom  # legend entries
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        _headless(exe, profile, f"--screenshot={shot}", html.as_uri())
    assert _not_blank(shot, min_std=0.03)


def _seeded(run: Path) -> None:
    """Give every ok row of the table 3 seeds: per-seed synergy around its mean, s.e. 0.02."""
    rows = [dict(r) for r in read_trials(run / "trials.csv")]  # rows as read are frozen
    for r in rows:
        if r["status"] == "ok" and r["synergy_gain"] is not None:
            m = r["synergy_gain"]
            r.update(seeds="[0, 1, 2]", synergy_per_seed=json.dumps([m - 0.02 * 3**0.5, m, m + 0.02 * 3**0.5]),
                     synergy_gain_stderr=0.02)  # fmt: skip
    write_trials(run / "trials.csv", rows)


def test_summary_carries_noise_ties_and_confirmed_flag(run: Path, tmp_path: Path) -> None:
    from searchvlm.schema.results import CONFIRMED_FILE, write_confirmed

    _seeded(run)
    s = pareto_summary(run)
    assert s["numbers"] == "search" and s["confirmed_seeds"] is None
    for r in s["front"]:
        assert r["synergy_gain_stderr"] == pytest.approx(0.02) and r["confirmed"] is False
        assert r["seeds"] == [0, 1, 2] and len(r["synergy_per_seed"]) == 3
    cells = {c["trial"]: c for c in front_table(read_trials(run / "trials.csv"))}
    assert all(c["± s.e."] == "0.0200" and c["seeds"] == "3" for c in cells.values())
    # the HTML front draws each point's standard error as an error bar
    html = pareto_plots(run, tmp_path / "out")["front_html"].read_text()
    assert '"error_y":{"array":[0.02,0.02,0.02]' in html.replace(" ", "")
    # confirmed numbers replace the search's and the summary says so
    conf = [{"trial_id": "t2", "number": 2, "status": "ok", "seeds": "[5, 6]", "flops_ratio": 0.5,
             "synergy_gain": 0.01, "synergy_gain_stderr": 0.005, "synergy_per_seed": "[0.005, 0.015]"},
            {"trial_id": "t3", "number": 3, "status": "ok", "seeds": "[5, 6]", "flops_ratio": 0.8,
             "synergy_gain": 0.011, "synergy_gain_stderr": 0.005, "synergy_per_seed": "[0.004, 0.018]"}]  # fmt: skip
    write_confirmed(run / CONFIRMED_FILE, conf)
    c = pareto_summary(run)
    assert c["numbers"] == "confirmed" and c["confirmed_seeds"] == [5, 6] and c["confirmed_policies"] == 2
    front = {r["trial_id"]: r for r in c["front"]}
    assert set(front) == {"t2", "t3"} and all(r["confirmed"] for r in front.values())
    assert front["t2"]["synergy_gain"] == 0.01 and front["t2"]["search_synergy_gain"] == pytest.approx(0.04)
    assert front["t2"]["ties"] == ["t3"] and front["t3"]["ties"] == ["t2"]  # 0.001 apart, paired s.e. 0.004
    assert c["trials"] == 7 and len(c["history"]) == 7  # the search's history stays


def _one_seed_sweep(tmp_path: Path, synergy_sd: float | None) -> Path:
    """A recorded sweep whose ok trials have one seed each, its space copy calibrated with `synergy_sd`."""
    import yaml

    from helpers.sweeps import recorded_sweep
    from searchvlm.schema.results import SWEEP_FILE, read_meta

    tmp_path.mkdir(parents=True, exist_ok=True)
    run = recorded_sweep(tmp_path)
    copy = run / Path(read_meta(run / SWEEP_FILE).space_path).name
    data = yaml.safe_load(copy.read_text())
    data["calibration"] = {"seeds": 5, "und_gain": [0.1, 0.02], "gen_gain": [0.05, 0.01], "synergy_sd": synergy_sd}
    copy.write_text(yaml.safe_dump(data))
    rows = [dict(r) for r in read_trials(run / "trials.csv")]  # rows as read are frozen
    for r in rows:
        r.update(seeds=json.dumps([0]), synergy_gain_stderr=None)
    write_trials(run / "trials.csv", rows)
    (run / "confirmed.csv").unlink()
    return run


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_one_seed_front_shows_the_calibrated_seed_noise(tmp_path: Path) -> None:
    from searchvlm.report import pareto_report
    from searchvlm.report._front import front_info
    from searchvlm.report._summary import read_sweep

    run = _one_seed_sweep(tmp_path, synergy_sd=0.17)
    summary = pareto_report(run, plots=False).summary
    assert summary["seed_noise"] == {"synergy_sd": 0.17, "source": "calibration"}
    assert (
        "SD 0.170" in summary["seed_noise_line"]
        and f"searchvlm confirm {summary['sweep']}" in summary["seed_noise_line"]
    )
    # differences within the noise tie: every front point is near another or the front itself
    s = read_sweep(run)
    info = front_info(s, searchvlm.objectives.pareto.hypervolume(s.rows, None))
    assert set(info.front.stderr) == {0.17} and "one seed's noise" in info.title
    # without a calibrated SD (and no trial with 2 seeds) nothing is claimed
    quiet = pareto_report(_one_seed_sweep(tmp_path / "b", synergy_sd=None), plots=False).summary
    assert quiet["seed_noise"] is None and quiet["seed_noise_line"] is None
