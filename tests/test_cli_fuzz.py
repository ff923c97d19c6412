"""Every command's options fed bad values (searchvlm.cli, searchvlm.cli._usage): never a
traceback, always a non-zero exit and one `error: ...` line naming the bad option or value.

Commands and their parameters are read from the typer app, so a new command or option is
fuzzed without editing this file; a path or text option the fuzzer cannot classify fails
`test_every_option_is_classified`. Nothing trains: the bad values are refused before any
work starts, and the work functions are replaced by stubs that fail the test if reached.
"""

from __future__ import annotations

import importlib
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from helpers import ROOT
from helpers.sweeps import make_sweep
from searchvlm.cli import app

QUICK = ROOT / "search_spaces" / "quick.yaml"
GROUP = typer.main.get_command(app)

#: path options naming an input that must exist
INPUT_PATHS = {"--policy", "--checkpoint"}
#: path options naming an output or a folder that may not exist yet
OUTPUT_PATHS = {"--cache-dir", "--runs-dir", "--output", "--out", "--export"}
#: text options where an empty value means "not given" (as an empty environment variable does)
EMPTY_MEANS_DEFAULT = {"--tracking-uri", "--address"}
#: (command, option) where -1 is a valid value
NEGATIVE_VALID = {("export", "--min-synergy"), ("export", "--max-flops")}
#: checks the CLI leaves to a work function stubbed here, with the test that covers them
CHECKED_BY_WORK = {("sweep", "--name"): "tests/sweep/test_driver.py::test_bad_name_fails_before_ray"}
#: options a command needs besides its arguments to reach the option checks
NEEDED = {"trial": ["--preset", "dense"], "diagnose": ["--preset", "dense"]}
#: where the work starts (training, a sweep), stubbed in every case: the sweep package whole; for the
#: commands that call one public function which checks its inputs first, the training function it reaches
WORK_MODULES = ("searchvlm.sweep",)
WORK_FUNCTIONS = {
    "searchvlm.train.trial": "run_trial",
    "searchvlm.records.reproduce": "reproduce",
    "searchvlm.records.analysis_run": "analyze",
    "searchvlm.records.diagnose": "prepare",
}


@dataclass(frozen=True)
class Param:
    command: str
    name: str  # the longest option string, or the argument's name
    kind: str  # int | float | flag | choice | path | text | list
    argument: bool
    required: bool

    def __str__(self) -> str:
        return f"{self.command} {self.name}"


def _kind(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return "list"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "choice"
    return {int: "int", float: "float", bool: "flag", Path: "path", str: "text"}[hint]


def _params() -> list[Param]:
    found = []
    for info in app.registered_commands:
        command = info.name or info.callback.__name__.lower().replace("_", "-")
        hints = typing.get_type_hints(info.callback)
        for p in GROUP.commands[command].params:
            argument = p.param_type_name == "argument"
            name = p.name if argument else max(p.opts, key=len)
            found.append(Param(command, name, _kind(hints[p.name]), argument, bool(p.required)))
    return found


PARAMS = _params()
COMMANDS = sorted(GROUP.commands)


def _of(command: str, *, argument: bool | None = None, kinds: tuple[str, ...] = ()) -> list[Param]:
    return [p for p in PARAMS if p.command == command and (argument is None or p.argument == argument)
            and (not kinds or p.kind in kinds)]  # fmt: skip


def _options(*kinds: str) -> list[Param]:
    return [p for p in PARAMS if not p.argument and p.kind in kinds]


def _stub_attr(stub: Any) -> Any:
    def attr(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # module machinery (inspect, pickle) asks for dunders
        return stub

    return attr


class ReachedWork(AssertionError):
    """A bad value got past the command line into the work."""


@pytest.fixture(autouse=True)
def stubbed_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def stub(*args: Any, **kwargs: Any) -> Any:
        raise ReachedWork(f"the work started with {args} {kwargs}")

    for name in WORK_MODULES:
        fake = types.ModuleType(name)
        fake.__getattr__ = _stub_attr(stub)  # type: ignore[method-assign]
        monkeypatch.setitem(sys.modules, name, fake)
    for module, function in WORK_FUNCTIONS.items():
        monkeypatch.setattr(importlib.import_module(module), function, stub)
    monkeypatch.chdir(tmp_path)  # nothing lands in the checkout


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(res: Any, *needles: str, code: int = 2) -> None:
    """Exit `code`, no traceback, an `error: ` line holding every needle."""
    assert not isinstance(res.exception, ReachedWork), f"{res.exception}\n{res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output and "╭" not in res.output, res.output  # no panel either
    assert res.exit_code == code, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert any(all(n in ln for n in needles) for ln in errors), res.output


# --------------------------------------------------------------------------- base arguments


def _bad_args(command: str, tmp: Path) -> list[str]:
    """Required arguments that name nothing: a missing file, an unknown sweep."""
    args = []
    for p in _of(command, argument=True):
        args.append(str(tmp / f"missing-{p.name}.yaml") if p.kind in ("path", "list") else f"no-such-{p.name}")
    return args + _runs_dir(command, tmp)


def _runs_dir(command: str, tmp: Path) -> list[str]:
    has = any(p.name == "--runs-dir" for p in _of(command, argument=False))
    (tmp / "runs").mkdir(exist_ok=True)
    return ["--runs-dir", str(tmp / "runs")] if has else []


def _good_args(command: str, tmp: Path) -> list[str]:
    """Required arguments that are valid: the quick space, a finished sweep, a policy file."""
    make_sweep(tmp / "runs", "fz") if not (tmp / "runs" / "fz").exists() else None
    policy = tmp / "dense.json"
    if not policy.exists():
        from searchvlm.schema.policy import ReductionPolicy

        policy.write_text(ReductionPolicy.dense(num_layers=4).model_dump_json())
    good = {"space_file": str(QUICK), "files": str(QUICK), "policy_file": str(policy)}
    return [good.get(p.name, "fz") for p in _of(command, argument=True)] + _runs_dir(command, tmp)


# --------------------------------------------------------------------------- the cases


def test_every_command_and_option_is_enumerated() -> None:
    assert {"trial", "sweep", "pareto", "export", "validate", "confirm", "rm", "runs", "ls"} <= set(COMMANDS)
    assert {"presets --layers", "export --rule", "sweep --samples", "trial --set"} <= {str(p) for p in PARAMS}


def test_every_option_is_classified() -> None:
    paths = {p.name for p in _options("path")}
    assert paths <= INPUT_PATHS | OUTPUT_PATHS, f"classify {paths - INPUT_PATHS - OUTPUT_PATHS} in this file"


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option(command: str, tmp_path: Path) -> None:
    assert_refused(invoke(command, *_bad_args(command, tmp_path), "--no-such-option"), "--no-such-option")


def test_unknown_command_and_group_option() -> None:
    assert_refused(invoke("no-such-command"), "no-such-command")
    assert_refused(invoke("--no-such-option"), "--no-such-option")


@pytest.mark.parametrize("command", [c for c in COMMANDS if any(p.required for p in _of(c, argument=True))])
def test_missing_argument(command: str) -> None:
    first = _of(command, argument=True)[0]
    assert_refused(invoke(command), f"{first.name.upper()}: missing argument")


@pytest.mark.parametrize("command", [c for c in COMMANDS if _of(c, argument=True)])
def test_arguments_that_name_nothing(command: str, tmp_path: Path) -> None:
    args = _bad_args(command, tmp_path)
    res = invoke(command, *args)
    assert_refused(res, args[0].rsplit("/", 1)[-1])


@pytest.mark.parametrize("command", [c for c in COMMANDS if _of(c, argument=True)])
def test_empty_arguments(command: str, tmp_path: Path) -> None:
    """An empty path is the current folder (refused as no space file, no sweep, no policy);
    an empty sweep name is the runs folder itself (refused: not a sweep; `rm` deletes nothing)."""
    args = ["" for _ in _of(command, argument=True)] + _runs_dir(command, tmp_path)
    res = invoke(command, *args)
    assert_refused(res)
    assert (tmp_path / "runs").is_dir()


@pytest.mark.parametrize("param", _options("int", "float"), ids=str)
def test_numbers_that_are_not_numbers(param: Param, tmp_path: Path) -> None:
    res = invoke(param.command, *_bad_args(param.command, tmp_path), param.name, "abc")
    assert_refused(res, f"error: command line: {param.name} = 'abc'")


@pytest.mark.parametrize("param", _options("choice"), ids=str)
def test_unknown_choices(param: Param, tmp_path: Path) -> None:
    res = invoke(param.command, *_bad_args(param.command, tmp_path), param.name, "bogus")
    assert_refused(res, f"error: command line: {param.name}", "'bogus'")


@pytest.mark.parametrize("param", [p for p in PARAMS if not p.argument and p.kind != "flag"], ids=str)
def test_option_without_its_value(param: Param, tmp_path: Path) -> None:
    res = invoke(param.command, *_bad_args(param.command, tmp_path), param.name)
    assert_refused(res, f"error: command line: {param.name}", "requires an argument")


NEGATIVE = [p for p in _options("int", "float") if (p.command, p.name) not in NEGATIVE_VALID]


@pytest.mark.parametrize("param", NEGATIVE, ids=str)
def test_negative_numbers_are_refused_before_any_work(param: Param, tmp_path: Path) -> None:
    res = invoke(param.command, *_good_args(param.command, tmp_path), *NEEDED.get(param.command, []), param.name, "-1")
    assert_refused(res, param.name, "-1")


EMPTY = [
    p
    for p in _options("text", "list")
    if p.name not in EMPTY_MEANS_DEFAULT and (p.command, p.name) not in CHECKED_BY_WORK
]


@pytest.mark.parametrize("param", EMPTY, ids=str)
def test_empty_text_options_are_refused_before_any_work(param: Param, tmp_path: Path) -> None:
    res = invoke(param.command, *_good_args(param.command, tmp_path), *NEEDED.get(param.command, []), param.name, "")
    assert_refused(res, param.name)


@pytest.mark.parametrize("param", [p for p in _options("path") if p.name in INPUT_PATHS], ids=str)
def test_input_files_that_do_not_exist(param: Param, tmp_path: Path) -> None:
    missing = tmp_path / ("deep" * 40) / "missing.json"  # a long path is named whole, not cut at 80 characters
    res = invoke(param.command, *_good_args(param.command, tmp_path), param.name, str(missing))
    assert_refused(res, str(missing))


def test_markup_in_a_value_is_printed_as_text(tmp_path: Path) -> None:
    res = invoke("trial", str(tmp_path / "no[/x][bold].yaml"), "--preset", "dense")
    assert_refused(res, "no[/x][bold].yaml")
