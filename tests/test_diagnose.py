"""The `diagnose` command: its JSON holds every checkpoint, layer and group (the trained
checkpoints at the joint run's earliest best validation rounds), its figure is written, and
a bad preset, policy or option is one `error:` line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ROOT
from helpers.sweeps import tiny_space
from searchvlm.cli import app
from searchvlm.objectives.synergy import HIGHER_IS_BETTER, best_step
from searchvlm.records.diagnose import load_report
from searchvlm.train.gradients import GROUPS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
QUICK = ROOT / "search_spaces" / "quick.yaml"
STATS = {"cosine", "cosine_se", "und_share", "und_norm", "gen_norm", "size"}


def cli(*args: object):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def assert_errors(res, *needles: str) -> None:
    """Exit 2, no traceback, only `error:` lines (one per problem), each holding every needle."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert lines and all(ln.startswith("error: ") and all(n in ln for n in needles) for ln in lines), res.output


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("diagnose")
    space = tiny_space(tmp / "tiny.yaml", steps=20)  # evaluation every 10 steps
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the data cache lands under tmp/runs
        res = cli("diagnose", space, "--preset", "himix_hmgen", "--batches", 2, "--out", tmp / "out")
    assert res.exit_code == 0, res.output
    return tmp / "out", res.output


def test_json_has_every_checkpoint_layer_and_group(diagnosed: tuple[Path, str]) -> None:
    out, printed = diagnosed
    data = json.loads((out / "diagnose.json").read_text())
    assert data["schema"] == "searchvlm.diagnose/v1" and data["groups"] == list(GROUPS)
    assert (data["steps"], data["space_steps"], data["budget"], data["batches"]) == (20, 20, "space", 2)
    layers = data["model"]["num_layers"]
    for c in data["checkpoints"]:
        assert len(c["layers"]) == layers
        for layer in c["layers"]:
            assert list(layer) == list(GROUPS) and all(set(s) == STATS for s in layer.values())
        assert set(c["overall"]) == STATS and set(c["outside"]) == STATS
    assert load_report(out / "diagnose.json").checkpoints[0].label == "init"
    assert (out / "diagnose.png").stat().st_size > 0 and "wrote" in printed


def test_trained_checkpoints_are_the_earliest_best_validation_rounds(diagnosed: tuple[Path, str]) -> None:
    data = json.loads((diagnosed[0] / "diagnose.json").read_text())
    init, *trained = data["checkpoints"]
    assert init["step"] == 0 and init["picked_by"] == [] and trained
    curves = {m: {int(s): v for s, v in c.items()} for m, c in data["val_curves"].items()}
    assert set(curves) == {"und_acc", "gen_nll"} and all(sorted(c) == [10, 20] for c in curves.values())
    picked = {m: c["step"] for c in trained for m in c["picked_by"]}
    assert picked == {m: best_step(curve, HIGHER_IS_BETTER[m]) for m, curve in curves.items()}
    assert [c["step"] for c in trained] == sorted({*picked.values()})  # one measurement per round


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--preset", "nosuch"], ["--preset", "'nosuch'", "unknown preset", "dense"]),
        (["--policy", "missing.json"], ["missing.json"]),
        ([], ["give exactly one of --preset NAME or --policy FILE"]),
        (["--preset", "dense", "--policy", "x.json"], ["give exactly one"]),
        (["--preset", "dense", "--set", "training.stepz=3"], ["training.stepz"]),
    ],
)
def test_bad_input_is_an_error_line(args: list[str], needles: list[str], tmp_path: Path) -> None:
    assert_errors(cli("diagnose", QUICK, *args, "--out", tmp_path), *needles)


def test_bad_policy_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_layers": 4, "understanding": {"keep": [2.0]}}')
    assert_errors(cli("diagnose", QUICK, "--policy", bad, "--out", tmp_path), str(bad))


def test_docs_list_every_report_field() -> None:
    """docs/diagnose.md's diagnose.json table names every field of `DiagnoseReport`, and the
    groups table every group."""
    from searchvlm.records.diagnose import DiagnoseReport

    text = (ROOT / "docs" / "diagnose.md").read_text()
    keys = {f.alias or name for name, f in DiagnoseReport.model_fields.items()}
    assert all(f"| `{k}` |" in text for k in keys), [k for k in keys if f"| `{k}` |" not in text]
    assert all(f"| `{g}` |" in text for g in GROUPS)
