"""`searchvlm.cli._request`: a record's field is one option with its help, default and bounds;
a bad value is the CLI's one `error:` line (exit 2) naming the option; a parsed field holds the
parsed value; `request` builds a library request from the record and refuses a missing field.
The commands' own options are checked against the real app at the end."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import typer
from typer.testing import CliRunner

from searchvlm.cli._base import seeds_option
from searchvlm.cli._help import HelpGroup
from searchvlm.cli._request import argument, option, record_command, request


@dataclass(frozen=True)
class Args:
    space_file: Path = argument(help="the space file")
    steps: Optional[int] = option(None, "--steps", min=1, help="training steps (default: the space's)")
    examples: int = option(256, "--examples", help="held-out examples per task")
    seeds: Optional[list[int]] = option(None, "--seeds", parse=seeds_option, help="comma-separated seeds")
    as_json: bool = option(False, "--json", help="print JSON")


@dataclass(frozen=True)
class Request:
    steps: Optional[int] = None
    seeds: Optional[list[int]] = None
    examples: int = 0


GOT: list[Args] = []


def _app() -> typer.Typer:
    app = typer.Typer(cls=HelpGroup, pretty_exceptions_enable=False)

    @app.command()
    @record_command
    def run(args: Args) -> None:
        """Run it."""
        GOT.append(args)

    @app.command()
    def other() -> None:  # a second command: `run` stays a subcommand
        """Nothing."""

    return app


def _invoke(*argv: str):
    GOT.clear()
    return CliRunner().invoke(_app(), list(argv), env={"COLUMNS": "200"})


def test_each_field_is_one_option_with_its_help_and_default():
    res = _invoke("run", "--help")
    assert res.exit_code == 0, res.output
    rows = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│ --")}
    assert "training steps (default: the space's)" in rows["--steps"] and "x>=1" in rows["--steps"]
    assert "held-out examples per task [default: 256]" in rows["--examples"]
    assert "0,1,2" in rows["--seeds"] and "comma-separated seeds" in rows["--seeds"]
    assert "SPACE_FILE" in res.output and "the space file" in res.output
    assert set(rows) == {"--steps", "--examples", "--seeds", "--json", "--help"}


def test_the_command_gets_one_record_with_parsed_values():
    res = _invoke("run", "s.yaml", "--steps", "3", "--seeds", "0,1", "--json")
    assert res.exit_code == 0, res.output
    assert GOT == [Args(Path("s.yaml"), steps=3, examples=256, seeds=[0, 1], as_json=True)]
    assert _invoke("run", "s.yaml").exit_code == 0 and GOT == [Args(Path("s.yaml"))]


@pytest.mark.parametrize(
    "argv, option_name",
    [
        (["--steps", "0"], "--steps"),  # below min=1: typer's check
        (["--examples", "many"], "--examples"),  # not an int: typer's check
        (["--seeds", "0,x"], "--seeds"),  # the field's parser: a ConfigError
    ],
)
def test_a_bad_value_is_one_error_line_naming_the_option(argv, option_name):
    res = _invoke("run", "s.yaml", *argv)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and option_name in lines[0], res.output
    assert GOT == []


def test_a_missing_argument_is_one_error_line():
    res = _invoke("run")
    assert res.exit_code == 2 and res.output.startswith("error:") and "SPACE_FILE" in res.output


def test_the_generated_signature_is_the_records_fields():
    params = inspect.signature(_app().registered_commands[0].callback).parameters
    assert list(params) == [f.name for f in dataclasses.fields(Args)]


def test_request_takes_the_records_fields_of_its_names():
    args = Args(Path("s.yaml"), steps=3, seeds=[1])
    assert request(Request, args) == Request(steps=3, seeds=[1], examples=256)
    assert request(Request, args, examples=7) == Request(steps=3, seeds=[1], examples=7)

    @dataclass(frozen=True)
    class Wider(Request):
        threads: Optional[int] = None

    with pytest.raises(TypeError, match="no command-line field for threads"):
        request(Wider, args)


def test_every_library_request_is_built_from_its_commands_record():
    """Each command record names every field of the library request it builds (a new request
    field must get its option), with the request's default as the option's default."""
    from searchvlm import cli
    from searchvlm.records.analysis_run import AnalysisRequest
    from searchvlm.records.decide import DecideOptions
    from searchvlm.records.diagnose import DiagnoseRequest
    from searchvlm.records.reproduce import ReproduceRequest
    from searchvlm.sweep._driver import SweepOptions

    pairs = [(cli.AnalyzeArgs, AnalysisRequest), (cli.DecideArgs, DecideOptions), (cli.DiagnoseArgs, DiagnoseRequest),
             (cli.ReproduceArgs, ReproduceRequest), (cli.SweepArgs, SweepOptions)]  # fmt: skip
    for record, req in pairs:
        given = {f.name: f.default for f in dataclasses.fields(record)}
        for f in dataclasses.fields(req):
            assert f.name in given, (record.__name__, f.name)
            assert given[f.name] == f.default, (record.__name__, f.name, given[f.name], f.default)
