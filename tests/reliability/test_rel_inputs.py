"""Bad input never crashes deep inside: property-based fuzzing of the search-space loader,
the policy loader and the CLI, plus the security rules (safe YAML, nothing unpickled,
output paths stay where the user pointed, nothing half-written).

Every failure must be a `ConfigError` (CLI: exit code 2) with one line per problem naming
the file, the key and the value; nothing else may escape and no output file may be left.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import ROOT
from searchvlm.cli import app
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import ReductionPolicy, load_policy, preset
from searchvlm.schema.results import SweepMeta, trial_row, write_meta, write_trials
from searchvlm.schema.space import load_space, preset_policy
from searchvlm.schema.trial_result import TrialResult

BASE_SPACE: dict = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
BASE_POLICY: dict = json.loads(preset("himix_hmgen", 4).model_dump_json())
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
runner = CliRunner()

# --------------------------------------------------------------------------- strategies

NASTY = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1.0, 1.5, 2, "drop", "bayes"]),
    st.lists(st.integers(-3, 300), max_size=6), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict/list (the places a mutation can hit)."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


def _set(data: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        data = data[p]
    data[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> tuple[dict, tuple, str]:
    """`base` with one random wrong value, unknown key or deleted key somewhere."""
    data = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(data)))
    how = draw(st.sampled_from(["value", "value", "unknown", "delete"]))
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    if how == "unknown" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["bogus", "Keep", "lr ", "__class__"]))] = draw(NASTY)
    elif how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        _set(data, path, draw(NASTY))
    return data, path, how


LINE = re.compile(r"^(?P<src>[^:]+): (?P<key>[^:=]+?)( = .+)?: .+$")


def assert_one_line_per_problem(err: ConfigError, path: Path) -> None:
    text = str(err)
    assert "Traceback" not in text and text.strip()
    for line in text.splitlines():
        assert line.startswith(f"{path}: "), line
        assert LINE.match(line), line
    assert len(text.splitlines()) == len(err.problems)


# --------------------------------------------------------------------------- space loader


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True) if not isinstance(data, str) else data


@FUZZ
@given(case=mutated(BASE_SPACE))
def test_fuzzed_space_loads_or_names_the_problem(case: tuple, tmp_path: Path):
    data, _, _ = case
    f = tmp_path / "space.yaml"
    f.write_text(_dump(data))
    try:
        space = load_space(f)
    except ConfigError as err:
        assert_one_line_per_problem(err, f)
    else:  # whatever loads is a usable space: finite numbers, compilable presets, a stable hash
        assert math.isfinite(space.search.scheduler.reduction_factor)
        for name in space.presets:
            assert preset_policy(space, name).num_layers == space.model.num_layers, name
        assert re.fullmatch(r"[0-9a-f]{16}", space.space_hash())
        assert load_space(f).space_hash() == space.space_hash()  # exported provenance is reproducible


@FUZZ
@given(text=st.text(max_size=80))
def test_arbitrary_text_as_space(text: str, tmp_path: Path):
    f = tmp_path / "junk.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(f)
    assert_one_line_per_problem(err.value, f)


@pytest.mark.parametrize(
    "patch, key, value",
    [
        (
            {
                "policy": {
                    "understanding": {
                        "schedules": [{"kind": "fastv", "ratio": {"type": "float", "low": 0.2, "high": 1.7}}]
                    }
                }
            },
            "policy.understanding.schedules[0].ratio",
            "1.7",
        ),
        ({"policy": {"generation": {"mode": ["skip", "drop"]}}}, "policy.generation", "drop"),
        ({"training": {"lr": float("nan")}}, "training.lr", "nan"),
        ({"training": {"steps": float("inf")}}, "training.steps", "inf"),
        ({"model": {"num_layers": 10**40}}, "model.num_layers", None),
        ({"model": {"num_layers": "four"}}, "model.num_layers", "'four'"),
        ({"search": {"sampler": "bayes", "colour": 3}}, "search.sampler", "'bayes'"),
        ({"search": {"colour": 3}}, "search.colour", "3"),
        ({"policy": {"sharing": {"scope": [0, 9]}}}, "policy.sharing.scope[1]", "9"),
        ({"constraints": ["__import__('os').system('x') <= 1"]}, "constraints[0]", "__import__"),
    ],
)
def test_space_errors_name_key_and_value(patch: dict, key: str, value: str | None, tmp_path: Path):
    data = copy.deepcopy(BASE_SPACE)
    for section, sub in patch.items():
        data[section] = {**data[section], **sub} if isinstance(sub, dict) else sub
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_space(f)
    assert_one_line_per_problem(err.value, f)
    line = next((ln for ln in str(err.value).splitlines() if key in ln), None)
    assert line is not None, str(err.value)
    assert value is None or value in line, line


def test_python_object_yaml_tag_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.yaml"
    f.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError) as err:
        load_space(f)
    assert "not valid YAML" in str(err.value) and "python/object" in str(err.value)
    assert_one_line_per_problem(err.value, f)
    assert not marker.exists()


# --------------------------------------------------------------------------- policy loader


@FUZZ
@given(case=mutated(BASE_POLICY), wrapped=st.booleans())
def test_fuzzed_policy_loads_or_names_the_problem(case: tuple, wrapped: bool, tmp_path: Path):
    data, _, _ = case
    if wrapped:
        data = {"schema": "searchvlm.policy/v1", "policy": data, "model": {"num_layers": 4}}
    f = tmp_path / "policy.json"
    f.write_text(json.dumps(data))  # NaN / Infinity tokens included
    try:
        pol = load_policy(f)
    except ConfigError as err:
        assert_one_line_per_problem(err, f)
    else:
        for task in ("understanding", "generation"):
            keep = pol.task(task).keep
            assert len(keep) == pol.num_layers and all(0.0 <= k <= 1.0 for k in keep)
        assert not (pol.generation.mode == "drop" and not pol.generation.is_dense)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d["understanding"].update(keep=[1.0, 0.5]), "understanding.keep"),
        (lambda d: d["generation"].update(keep=[1.0, 1.2, 0.5, 0.5]), "generation.keep[1]"),
        (lambda d: d["generation"].update(mode="drop"), "generation.mode"),
        (lambda d: d.update(tie_schedules="yes please"), "tie_schedules"),
        (lambda d: d.update(exec="import os"), "exec"),
        (lambda d: d["understanding"].update(keep=[float("nan")] * 4), "<root>"),
    ],
)
def test_policy_errors_name_key(mutate: Any, key: str, tmp_path: Path):
    data = copy.deepcopy(BASE_POLICY)
    mutate(data)
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_policy(f)
    assert_one_line_per_problem(err.value, f)
    assert f"{f}: {key}" in str(err.value), str(err.value)


def test_policy_num_layers_must_match_the_target(tmp_path: Path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(BASE_POLICY))
    with pytest.raises(ConfigError, match=r"policy.num_layers = 4: the target model has 8 layers"):
        load_policy(f, num_layers=8)


def test_tokens_file_is_never_unpickled(tmp_path: Path):
    from searchvlm.data._files import read_arrays
    from searchvlm.schema.config import DataConfig

    f = tmp_path / "evil.npz"
    np.savez(f, input_ids=np.array([object()], dtype=object))
    with pytest.raises(ConfigError) as err:
        read_arrays(DataConfig(name="tokens", path=str(f)))
    assert "evil.npz" in str(err.value)


# --------------------------------------------------------------------------- CLI


def cli(*args: str) -> Any:
    res = runner.invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def assert_cli_error(res: Any, *needles: str) -> None:
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), out
    for n in needles:
        assert n in out, out


@FUZZ
@given(case=mutated(BASE_SPACE))
def test_cli_validate_fuzzed_space(case: tuple, tmp_path: Path):
    f = tmp_path / "space.yaml"
    f.write_text(_dump(case[0]))
    res = cli("validate", str(f))
    if res.exit_code != 0:
        assert_cli_error(res, str(f))


@FUZZ
@given(junk=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_cli_validate_junk_json(junk: str, tmp_path: Path):
    f = tmp_path / "policy.json"
    f.write_text(junk)
    assert_cli_error(cli("validate", str(f)), str(f))


def test_cli_sweep_bad_space_leaves_nothing(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("search: {samples: -3}\n")
    runs = tmp_path / "runs"
    assert_cli_error(cli("sweep", str(f), "--runs-dir", str(runs)), f"{f}: search.samples = -3")
    assert not runs.exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ".hidden"])
def test_cli_sweep_name_cannot_leave_runs_dir(name: str, tmp_path: Path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(BASE_SPACE))
    runs = tmp_path / "work" / "runs"
    assert_cli_error(cli("sweep", str(space), "--name", name, "--runs-dir", str(runs)), "--name")
    assert not (tmp_path / "work").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["trial", "{space}", "--preset", "fastvv"], "--preset"),
        (["trial", "{space}"], "--preset/--policy"),
        (["trial", "{space}", "--policy", "{missing}"], "cannot read file"),
        (["pareto", "nosuch", "--runs-dir", "{tmp}"], "RUN"),
        (["export", "nosuch", "--runs-dir", "{tmp}", "-o", "{tmp}/p.json"], "RUN"),
        (["reproduce", "{space}", "--presets", "dense,bogus"], "--presets"),
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], needle: str, tmp_path: Path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(BASE_SPACE))
    fill = {"space": str(space), "missing": str(tmp_path / "nope.json"), "tmp": str(tmp_path)}
    assert_cli_error(cli(*(a.format(**fill) for a in args)), needle)


# --------------------------------------------------------------------------- export targets


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A finished sweep on disk (table + metadata), no training needed."""
    run = tmp_path / "runs" / "s"
    pol = preset("himix", 4)
    rows = [trial_row(TrialResult(status="ok", flops_ratio=0.5 + i / 10, synergy_gain=0.1 - i / 10, policy=pol),
                      f"t{i}", i) for i in range(3)]  # fmt: skip
    rows.append(trial_row(TrialResult(status="failed", error="boom", policy=pol), "t3", 3))
    write_trials(run / "trials.csv", rows)
    write_meta(run / "sweep.json", SweepMeta(name="s", space_path="x.yaml", space_hash="0" * 16,
                                             package_version="0", model={"num_layers": 4}))  # fmt: skip
    return run


def test_export_roundtrip_is_valid(sweep_dir: Path, tmp_path: Path):
    out = tmp_path / "out" / "policy.json"
    res = cli("export", str(sweep_dir), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert isinstance(load_policy(out), ReductionPolicy)
    # no temp files: the policy and its picture (export draws policy.png beside the file)
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy.json", "policy.png"]


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "read_only"])
def test_export_to_bad_location_leaves_nothing(where: str, sweep_dir: Path, tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = {"under_a_file": blocker / "policy.json", "a_directory": tmp_path,
              "read_only": ro / "policy.json"}[where]  # fmt: skip
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        res = cli("export", str(sweep_dir), "-o", str(target))
        if where == "read_only" and res.exit_code == 0:
            pytest.skip("running as a user that ignores directory permissions")
        assert_cli_error(res, "--output")
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    finally:
        ro.chmod(0o700)


def test_export_infeasible_constraint_names_closest(sweep_dir: Path, tmp_path: Path):
    out = tmp_path / "p.json"
    assert_cli_error(cli("export", str(sweep_dir), "--max-flops", "0.01", "-o", str(out)), "trials.csv")
    assert not out.exists()


def test_corrupt_trials_table_is_a_config_error(sweep_dir: Path, tmp_path: Path):
    table = sweep_dir / "trials.csv"
    table.write_text(table.read_text().replace("0.5", "zero point five", 1))
    out = tmp_path / "p.json"
    assert_cli_error(cli("export", str(sweep_dir), "-o", str(out)), "trials.csv", "row 1")
    assert not out.exists()
