"""`reproduce --max-seeds`: Table 3's rows run until decided or at the seed cap.

The decision logic on simulated paired differences (`noninferiority.sequential_verdicts`, no
training), then `reproduce` itself with `run_trial` replaced by a recorder of made-up one-seed
results (which rows get which seeds, why each stops, what a rerun trains), and once for real
on a tiny proxy (slow)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from helpers.sweeps import TINY_REPRODUCE_SPACE as TINY_SPACE
from searchvlm.cli import app
from searchvlm.objectives.noninferiority import (
    CandidateTest,
    check_candidate,
    look_schedule,
    race,
    row_verdicts,
    seeds_needed,
    sequential_level,
    sequential_verdicts,
)
from searchvlm.records.reproduce import RACE_FILE, reproduce
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.search import DecisionSettings
from searchvlm.schema.space import load_space
from searchvlm.schema.trial_result import TrialResult

DELTA, ALPHA = 0.035, 0.05

# --------------------------------------------------------------------------- the logic alone

#: per-seed differences of three made-up rows: far above -delta (decided at the first look),
#: far below it (decided at the first look), and noisy around it (undecided to the cap)
KEPT = [0.0100, 0.0102, 0.0101, 0.0099, 0.0100, 0.0103, 0.0098, 0.0101]
LOST = [-0.300, -0.301, -0.299, -0.302, -0.300, -0.298, -0.300, -0.301]
NOISY = [0.20, -0.30, 0.25, -0.28, 0.22, -0.31, 0.27, -0.26]
TABLE = {"kept": KEPT, "lost": LOST, "noisy": NOISY}


class Sampler:
    """`sample(row, n)`: the row's first n differences, every request recorded."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table, self.asked = table, []

    def __call__(self, name: str, n: int) -> list[float]:
        self.asked.append((name, n))
        return self.table[name][:n]


def test_decided_rows_get_no_more_seeds_and_undecided_ones_stop_at_the_cap() -> None:
    looks = look_schedule(2, 8)  # [2, 4, 8]: decide's looks
    sample = Sampler(TABLE)
    tests = sequential_verdicts([(k, 0.5) for k in TABLE], sample, DELTA, ALPHA, looks)
    assert {k: (t.state, t.seeds) for k, t in tests.items()} == {
        "kept": ("non_inferior", 2), "lost": ("inferior", 2), "noisy": ("undecided", 8)}  # fmt: skip
    # the look by look order: every row at 2 seeds, then only the undecided one
    assert sample.asked == [("kept", 2), ("lost", 2), ("noisy", 2), ("noisy", 4), ("noisy", 8)]


def test_each_look_of_each_row_is_tested_at_alpha_over_rows_times_looks() -> None:
    looks = [2, 4, 8]
    level = sequential_level(ALPHA, 3, looks)
    assert level == pytest.approx(ALPHA / 9)
    tests = sequential_verdicts([(k, 0.5) for k in TABLE], Sampler(TABLE), DELTA, ALPHA, looks)
    d = np.asarray(NOISY)
    half = stats.t.ppf(1 - ALPHA / 9, 7) * d.std(ddof=1) / math.sqrt(8)
    assert tests["noisy"].lower == pytest.approx(d.mean() - half)
    assert tests["noisy"].upper == pytest.approx(d.mean() + half)


def test_one_look_is_row_verdicts() -> None:
    """With the seeds given only (max_seeds = their count) the sequential verdicts are today's."""
    got = sequential_verdicts([(k, 0.5) for k in TABLE], Sampler(TABLE), DELTA, ALPHA, [5])
    fixed = row_verdicts({k: v[:5] for k, v in TABLE.items()}, dict.fromkeys(TABLE, 0.5), DELTA, ALPHA)
    assert {k: t.as_dict() for k, t in got.items()} == {k: t.as_dict() for k, t in fixed.items()}


def test_a_row_is_tested_as_decide_tests_a_candidate() -> None:
    """One row: the same looks, level and bounds as `decide`'s race on the same differences."""
    for diffs in TABLE.values():
        one = {"a": diffs}
        mine = sequential_verdicts([("a", 0.5)], Sampler(one), DELTA, ALPHA, [2, 4, 8])["a"]
        raced = race([("a", 0.5)], Sampler(one), DELTA, ALPHA, [2, 4, 8]).tested[0]
        assert mine.as_dict() == raced.as_dict()


def test_a_row_whose_runs_failed_leaves_the_looks() -> None:
    def sample(name: str, n: int) -> list[float] | None:
        return None if name == "broken" and n > 2 else NOISY[:n]

    tests = sequential_verdicts([("broken", 0.5), ("noisy", 0.5)], sample, DELTA, ALPHA, [2, 4, 8])
    assert (tests["broken"].seeds, tests["broken"].state) == (2, "undecided")
    assert tests["noisy"].seeds == 8


def test_wrong_verdicts_stay_within_alpha_over_the_table() -> None:
    """400 tables of 3 rows, each truly delta below dense: P(any row called non-inferior) <= alpha
    (plus 3 binomial standard errors), however many looks a row takes."""
    rng = np.random.default_rng(0)
    reps, wrong = 400, 0
    for _ in range(reps):
        table = {k: list(rng.normal(-DELTA, 0.05, size=12)) for k in "abc"}
        tests = sequential_verdicts([(k, 0.5) for k in table], Sampler(table), DELTA, ALPHA, [3, 6, 12])
        wrong += any(t.state == "non_inferior" for t in tests.values())
    assert wrong / reps <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


# --------------------------------------------------------------------------- reproduce, runs recorded


@pytest.fixture
def base(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return load_space(path).trial_config(None, cache_dir=tmp_path / "cache")


#: each preset's synergy on a seed: dense's, plus the row's made-up difference on that seed
OFFSET = {"himix": KEPT, "fastv": NOISY, "tied": LOST}


def dense_synergy(seed: int) -> float:
    return 0.1 + 0.01 * seed


class Runs:
    """Stands in for `searchvlm.train.trial.run_trial`: records each call, answers a one-seed result;
    `stop_after` calls later it raises (as if the process were killed)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[str, tuple[int, ...], bool]] = []
        self.stop_after = stop_after

    def __call__(self, config, progress=None, report=None) -> TrialResult:
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        name, seeds = config.name, tuple(config.seeds)
        self.calls.append((name, seeds, config.synergy.vs_dense))
        per_seed = []
        for s in seeds:
            diff = OFFSET[name][s] if name in OFFSET else 0.0
            syn = dense_synergy(s) + diff
            rec = {"seed": s, "synergy_gain": syn, "und_gain": syn, "gen_gain": syn + 0.1}
            if config.synergy.vs_dense:
                rec.update(synergy_vs_dense=diff, und_gain_vs_dense=diff, gen_gain_vs_dense=diff)
            per_seed.append(rec)
        mean = float(np.mean([p["synergy_gain"] for p in per_seed]))
        return TrialResult(status="ok", flops_ratio=0.5, seeds=list(seeds), per_seed=per_seed, synergy_gain=mean,
                           steps_done=4, train_seconds=1.0)  # fmt: skip


MARGIN = DecisionSettings(delta=DELTA, alpha=ALPHA)
PRESETS = ["himix", "fastv", "tied"]  # dense is added: every row's reference


def test_rows_run_until_decided_or_the_cap(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = Runs()
    monkeypatch.setattr("searchvlm.train.trial.run_trial", runs)
    table = reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=8)
    trained = {}
    for name, seeds, vs_dense in runs.calls:
        assert len(seeds) == 1 and vs_dense  # one seed a run, paired with the dense joint model
        trained.setdefault(name, []).append(seeds[0])
    # looks [2, 4, 8]: seeds 0, 1 given, then 2..7; decided rows stop at the first look
    assert trained == {"dense": list(range(8)), "himix": [0, 1], "tied": [0, 1], "fastv": list(range(8))}
    assert table.trained == 20 and table.reused == 0
    by = {r.preset: r for r in table.rows}
    assert [r.preset for r in table.rows] == ["isolated", "isolated", "dense", "fastv", "himix", "tied"]
    got = {k: (by[k].verdict, by[k].stopped, json.loads(by[k].seeds)) for k in PRESETS}
    assert got == {"himix": ("non-inferior", "decided", [0, 1]), "tied": ("inferior", "decided", [0, 1]),
                   "fastv": ("undecided", "cap", list(range(8)))}  # fmt: skip
    assert json.loads(by["dense"].seeds) == list(range(8)) and by["dense"].verdict is None
    # the verdict is decide's test on the row's differences, at alpha / (3 rows * 3 looks)
    level = ALPHA / 9
    for name in PRESETS:
        n = len(json.loads(by[name].seeds))
        expect = check_candidate(CandidateTest(name, 0.5), OFFSET[name][:n], level, DELTA)
        assert by[name].synergy_vs_dense_lower == pytest.approx(expect.lower)
        assert by[name].synergy_vs_dense == pytest.approx(np.mean(OFFSET[name][:n]))
    assert by["fastv"].seeds_needed == seeds_needed(float(np.std(NOISY, ddof=1)), DELTA, level)
    assert by["himix"].seeds_needed is None
    # the files: the seeds and why each row stopped, in the CSV and the Markdown
    with (tmp_path / "out" / "table3.csv").open() as fh:
        rows = {r["preset"]: r for r in csv.DictReader(fh)}
    assert rows["fastv"]["stopped"] == "cap" and rows["fastv"]["seeds"] == json.dumps(list(range(8)))
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "| seeds |" in md and f"| 8 (cap, ~{by['fastv'].seeds_needed} needed) |" in md and "| 2 |" in md
    plan = json.loads((tmp_path / "out" / RACE_FILE).read_text())["plan"]
    assert plan == {"delta": DELTA, "alpha": ALPHA, "looks": [2, 4, 8], "seeds": list(range(8)),
                    "rows": ["fastv", "himix", "tied"], "level_per_look": pytest.approx(level)}  # fmt: skip


def test_an_interrupted_run_resumes_without_retraining(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Runs(stop_after=7)
    monkeypatch.setattr("searchvlm.train.trial.run_trial", first)
    with pytest.raises(KeyboardInterrupt):
        reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=8)
    again = Runs()
    monkeypatch.setattr("searchvlm.train.trial.run_trial", again)
    table = reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=8)
    assert not set(first.calls) & set(again.calls)  # nothing recorded is trained again
    assert len(first.calls) + len(again.calls) == 20 and table.trained == 13
    done = Runs()
    monkeypatch.setattr("searchvlm.train.trial.run_trial", done)
    rerun = reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=8)
    assert done.calls == [] and rerun.trained == 0 and rerun.reused == 20
    assert [r.verdict for r in rerun.rows] == [r.verdict for r in table.rows]
    # another plan on seeds already seen (a later cap: more looks) would break the error rate
    with pytest.raises(ConfigError, match=r"plan = 'level_per_look, looks, seeds'"):
        reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=16)
    assert done.calls == []


def test_without_max_seeds_nothing_changes(base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = Runs()
    monkeypatch.setattr("searchvlm.train.trial.run_trial", runs)
    table = reproduce(base, tmp_path / "out", ["dense", *PRESETS], margin=MARGIN)
    assert runs.calls == [(p, (0, 1), False) for p in ("dense", "fastv", "himix", "tied")]  # one trial a row
    assert not (tmp_path / "out" / RACE_FILE).exists() and table.trained is None
    by = {r.preset: r for r in table.rows}
    tests = row_verdicts({k: OFFSET[k][:2] for k in PRESETS}, dict.fromkeys(PRESETS, 0.5), DELTA, ALPHA)
    for name in PRESETS:  # today's verdicts: alpha / rows, on the given seeds
        assert by[name].synergy_vs_dense_lower == pytest.approx(tests[name].lower)
        assert by[name].stopped is None and json.loads(by[name].seeds) == [0, 1]


def test_max_seeds_with_the_given_seeds_only_is_one_look(base, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("searchvlm.train.trial.run_trial", Runs())
    table = reproduce(base, tmp_path / "out", PRESETS, margin=MARGIN, max_seeds=2)
    by = {r.preset: r for r in table.rows}
    tests = row_verdicts({k: OFFSET[k][:2] for k in PRESETS}, dict.fromkeys(PRESETS, 0.5), DELTA, ALPHA)
    for name in PRESETS:
        assert by[name].synergy_vs_dense_lower == pytest.approx(tests[name].lower)
        assert by[name].verdict == tests[name].state.replace("_", "-")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-seeds", "8"], "--max-seeds = 8: running rows until decided needs a margin"),
        (["--max-seeds", "1", "--set", "decision.delta=0.04"], "--max-seeds = 1: below the 2 seeds"),
        (["--max-seeds", "4", "--seeds", "3", "--set", "decision.delta=0.04"], "a paired bound needs at least 2"),
    ],
)
def test_bad_max_seeds_is_refused_before_any_training(tmp_path: Path, args: list[str], fragment: str) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    result = CliRunner().invoke(app, ["reproduce", str(space), "--runs-dir", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert fragment in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- for real


@pytest.mark.slow  # real training of a tiny proxy, three times
def test_one_seed_runs_combine_to_the_trial_on_all_seeds(base, tmp_path: Path) -> None:
    """A row built from one-seed runs (paired through the cached dense joint model) has the
    numbers of one trial on all those seeds, and a rerun trains nothing."""
    margin = DecisionSettings(delta=1000.0)  # decided at the first look
    table = reproduce(base, tmp_path / "until", ["dense", "himix"], margin=margin, max_seeds=4)
    fixed = reproduce(base, tmp_path / "fixed", ["dense", "himix"], margin=margin)
    until = {r.preset: r for r in table.rows}
    once = {r.preset: r for r in fixed.rows}
    assert until["himix"].stopped == "decided" and until["himix"].verdict == "non-inferior"
    for key in ("synergy_gain", "und_gain", "gen_gain", "synergy_gain_stderr", "synergy_vs_dense", "und_acc"):
        for name in ("dense", "himix"):
            assert getattr(until[name], key) == pytest.approx(getattr(once[name], key)), (name, key)
    assert table.trained == 4  # dense and himix on seeds 0 and 1
    again = reproduce(base, tmp_path / "until", ["dense", "himix"], margin=margin, max_seeds=4)
    assert again.trained == 0 and again.rows == table.rows
