"""The generated YAML reference (docs/space.md, `searchvlm schema`) and the docs it keeps in
sync: every field documented, every key path rendered, the files up to date with the code,
and no citation of a document outside the repository."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from searchvlm.cli import app
from searchvlm.schema import doc as schema_doc
from searchvlm.schema.policy.space import Dist
from searchvlm.schema.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "stale: run `python -m searchvlm.schema.doc` and commit the result"


def test_every_rendered_field_has_a_description() -> None:
    assert schema_doc.missing_descriptions() == []


def test_space_md_is_up_to_date() -> None:
    assert (ROOT / schema_doc.SPACE_DOC).read_text() == schema_doc.space_reference(), REGENERATE


@pytest.mark.parametrize("doc", schema_doc.BLOCK_DOCS)
def test_generated_blocks_are_up_to_date(doc: str) -> None:
    text = (ROOT / doc).read_text()
    assert "BEGIN GENERATED" in text
    assert schema_doc.sync_blocks(text) == text, REGENERATE


def test_every_block_is_used_once() -> None:
    text = "".join((ROOT / d).read_text() for d in schema_doc.BLOCK_DOCS)
    names = re.findall(r"BEGIN GENERATED: (\w+)", text)
    assert sorted(names) == sorted(schema_doc.BLOCKS)


def test_check_mode_reports_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(schema_doc, "__file__", str(tmp_path / "searchvlm" / "schema" / "doc.py"))
    assert schema_doc.main(["--check"]) == 1  # docs/space.md missing
    assert schema_doc.main([]) == 0
    assert (tmp_path / "docs" / "space.md").read_text() == schema_doc.space_reference()
    assert schema_doc.main(["--check"]) == 0


def _paths(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key path of `cls`, written independently of the renderer."""
    out = []
    for name, info in cls.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        out.append(key)
        for sub, model in _models(info.annotation):
            if model is not Dist:
                out += _paths(model, key + sub)
    return out


def _models(tp: typing.Any) -> list[tuple[str, type[BaseModel]]]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _models(args[0])
    if origin is list:
        inner = _models(args[0])
        return [(s if s.startswith("[") else "[]" + s, m) for s, m in inner]
    if args:
        found = [m for a in args for m in _models(a)]
        if len(found) > 1:  # a union of schedule kinds
            return [(f"[kind={m.model_fields['kind'].default}]", m) for _, m in found]
        return found
    if isinstance(tp, type) and "variants" in vars(tp):  # a schedule list item: one of the kinds
        return [(f"[kind={m.model_fields['kind'].default}]", m) for m in tp.variants()]
    return [("", tp)] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def test_every_key_path_is_rendered() -> None:
    text = schema_doc.space_reference()
    paths = _paths(SearchSpace)
    assert len(paths) > 80
    for key in paths:
        assert f"| `{key}` |" in text, key
    for name in Dist.model_fields:
        assert f"| `<dist>.{name}` |" in text, name


def test_types_defaults_and_allowed_values() -> None:
    lines = schema_doc.space_reference().splitlines()
    rows = {line.split(" | ")[0][3:-1]: line for line in lines if line.startswith("| `")}
    assert "| int | `4` | [1, 128] | decoder layers |" in rows["model.num_layers"]
    assert '`"digits"`, `"shapes"`, `"tokens"`' in rows["data.name"]
    assert '`"best"`' in rows["synergy.at"] and "best (the evaluation round" in rows["synergy.at"]
    assert 'items: one of `"query_drop"`, `"skip"`, `"drop"`' in rows["policy.understanding.mode"]
    assert "| dist | `2` |" in rows["policy.generation.schedules[kind=fastv].start"]
    per_layer = rows["policy.understanding.schedules[kind=per_layer].keep"]
    assert '`{"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}`' in per_layer
    assert "| int or null | `null` | ≥ 1 |" in rows["search.scheduler.grace_steps"]
    assert "himix_hmgen_partial" in rows["presets"]
    assert "| required |" in rows["calibration.und_gain"]


def test_descriptions_with_pipes_keep_the_table_whole() -> None:
    for line in schema_doc.space_reference().splitlines():
        if line.startswith("| `"):
            assert len(re.split(r"(?<!\\)\|", line)) == 7, line  # 5 cells between 6 bars


def test_cli_schema_prints_the_reference_and_the_json_schema() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["schema"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert res.output == schema_doc.space_reference()
    res = runner.invoke(app, ["schema", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == SearchSpace.model_json_schema()


def _repo_files() -> list[Path]:
    skip = {".venv", ".git", "runs", "node_modules"}
    return [p for ext in ("py", "yaml", "md", "toml") for p in ROOT.rglob(f"*.{ext}")
            if not skip & set(p.relative_to(ROOT).parts)]  # fmt: skip


def test_no_citation_of_documents_outside_the_repository() -> None:
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in _repo_files()
           for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
           if re.search(r"\b(DESIGN|REFERENCE)\.md\b", line)]  # fmt: skip
    assert bad == []


def test_cited_docs_exist() -> None:
    """Every file under docs that a repository file names exists, also one named without its suffix."""
    cited = {m for p in _repo_files() for m in re.findall(r"docs/[\w-]+(?:\.\w+)?", p.read_text(errors="replace"))}
    assert {"docs/definitions.md", "docs/file-formats.md", "docs/space.md"} <= cited
    assert [c for c in cited if not (ROOT / c).exists()] == []


def test_quick_yaml_points_to_the_reference() -> None:
    text = (ROOT / "search_spaces" / "quick.yaml").read_text()
    assert "trial --help" not in text and "docs/space.md" in text
