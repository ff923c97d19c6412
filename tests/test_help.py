"""Every command's `--help` (searchvlm.cli._help): each value shows its shape (`--seeds 0,1,2`,
`--runs-dir DIR`), a flag shows none, no typer type name (`<bool>`, `<str>`, `<path>`) is left,
and each command has one example line that its own parser accepts.

Commands are read from the typer app, so a new command or option is checked without editing
this file.
"""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from typer.testing import CliRunner

from searchvlm.cli import app
from searchvlm.cli._help import metavar

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)
#: typer's type names as metavars: `<bool>`, `<str>`, `<path>`, `<int>`, `<list[str]>`, `<float range>`
TYPE_METAVAR = re.compile(r"<(bool|str|path|int|float|text|list\[\w+\]|[a-z]+ range|file|directory)>")


def _help(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def _rows(text: str) -> dict[str, str]:
    """Each option's row of the help table: `--name` -> what follows it on that row."""
    rows = {}
    for line in text.splitlines():
        found = re.match(r"│\s+(\*\s+)?(--[\w-]+)(?:\s+-\w)?\s+(.*?)\s*│$", line)
        if found:
            rows[found.group(2)] = found.group(3)
    return rows


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_no_type_names_as_metavars(command: str) -> None:
    text = _help(*([command] if command else []))
    assert TYPE_METAVAR.findall(text) == [], text
    assert "{" not in text.split("\n\n", 2)[1]  # the usage line names arguments plainly: SPACE_FILE


@pytest.mark.parametrize("command", COMMANDS)
def test_every_value_shows_its_shape_and_a_flag_none(command: str) -> None:
    rows = _rows(_help(command))
    cmd = GROUP.commands[command]
    for param in cmd.params:
        if param.param_type_name != "option":
            continue
        long, shape = max(param.opts, key=len), metavar(param)
        assert param.metavar == shape, (command, long)
        if shape:
            assert rows[long].startswith(f"{shape} "), (command, long, rows[long])
        else:  # a flag: its help text follows the name (or its --no- twin)
            assert not rows[long].startswith(("<", "[", "BOOL")), (command, long, rows[long])
    assert rows["--help"].startswith("Show this message")


def test_the_shapes_of_common_options() -> None:
    rows = _rows(_help("decide"))
    assert rows["--seeds"].startswith("0,1,2 ")
    assert rows["--runs-dir"].startswith("DIR ")
    assert rows["--max-seeds"].startswith("N ")
    assert rows["--json"].startswith("print decision.json")  # a flag: its help, no value
    assert _rows(_help("trial"))["--set"].startswith("KEY=VALUE ")
    assert _rows(_help("trial"))["--policy"].startswith("FILE ")
    assert _rows(_help("pareto"))["--ref"].startswith("FLOPS,SYNERGY ")
    assert _rows(_help("export"))["--rule"].startswith("knee|max-synergy|min-flops|decision ")
    assert "trial [OPTIONS] SPACE_FILE " in _help("trial")
    assert "validate [OPTIONS] FILES... " in _help("validate")


@pytest.mark.parametrize("command", COMMANDS)
def test_one_example_line_that_the_command_parses(command: str) -> None:
    examples = [line.strip() for line in _help(command).splitlines() if line.strip().startswith("Example: ")]
    assert len(examples) == 1, examples
    words = shlex.split(examples[0].removeprefix("Example: "))
    assert words[:2] == ["searchvlm", command]
    cmd = GROUP.commands[command]
    with cmd.make_context(command, words[2:]) as ctx:  # an unknown option or a missing argument raises
        assert ctx.params
