"""The YAML reference, generated from the pydantic field docs (`docs/space.md`, `searchvlm schema`).

L0 module: pydantic + stdlib only. `space_reference()` walks `SearchSpace` and every model
nested in it and renders each key path with its type, default, allowed values and
description. A field without a description is reported by `missing_descriptions()` (a
model-typed field may take its class docstring instead), and a test fails on it, so the
reference stays complete. The same renderer fills the marked blocks of `docs/*.md` (the
explicit policy, the exported policy file, `TrialResult` and its `SeedResult`, `sweep.json`):

    <!-- BEGIN GENERATED: TrialResult -->  ...  <!-- END GENERATED -->

`python -m searchvlm.schema.doc` rewrites `docs/space.md` and those blocks; `--check` only
says which are out of date (exit 1).
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from searchvlm.schema.policy import PolicyFile, ReductionPolicy
from searchvlm.schema.policy.space import Dist
from searchvlm.schema.results import SweepMeta
from searchvlm.schema.space import SearchSpace
from searchvlm.schema.trial_result import SeedResult, TrialResult

__all__ = ["BLOCKS", "missing_descriptions", "render_block", "space_json_schema", "space_reference", "sync_blocks"]

SPACE_DOC = "docs/space.md"
#: documents holding generated blocks (relative to the repository root)
BLOCK_DOCS = ("docs/definitions.md", "docs/file-formats.md")
#: block name -> (model, expand nested models into their own sections)
BLOCKS: dict[str, tuple[type[BaseModel], bool]] = {
    "ReductionPolicy": (ReductionPolicy, True),
    "PolicyFile": (PolicyFile, False),
    "TrialResult": (TrialResult, False),
    "SeedResult": (SeedResult, False),
    "SweepMeta": (SweepMeta, False),
}
#: models rendered once in their own section and referred to by name (value types)
_VALUE_MODELS: dict[type[BaseModel], str] = {Dist: "dist"}
_NAMES: dict[Any, str] = {type(None): "null", Any: "any", str: "str", int: "int", float: "float", bool: "bool",
                          dict: "mapping"}  # fmt: skip
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (\w+) -->\n)(.*?)(<!-- END GENERATED -->)", re.S)


@dataclass(frozen=True)
class _Row:
    key: str
    type: str
    default: str
    allowed: str
    description: str


@dataclass
class _Section:
    key: str
    title: str
    rows: list[_Row] = field(default_factory=list)


@dataclass(frozen=True)
class _Shape:
    """What an annotation means in a YAML file: its type text, allowed values, nested models."""

    text: str
    allowed: tuple[str, ...] = ()
    nested: tuple[tuple[str, type[BaseModel]], ...] = ()  # (key suffix, model)


# --------------------------------------------------------------------------- types


def _constraints(metadata: list[Any]) -> tuple[str, ...]:
    """`annotated_types` bounds (ge, gt, le, lt, min_length) as short text."""
    got: dict[str, Any] = {}
    for m in metadata:
        got.update(_bounds(m.metadata if isinstance(m, FieldInfo) else [m]))
    lo = f"≥ {got['ge']}" if "ge" in got else f"> {got['gt']}" if "gt" in got else ""
    hi = f"≤ {got['le']}" if "le" in got else f"< {got['lt']}" if "lt" in got else ""
    if "ge" in got and "le" in got:
        parts = [f"[{got['ge']}, {got['le']}]"]
    else:
        parts = [p for p in (lo, hi) if p]
    if "min_length" in got:
        parts.append(f"at least {got['min_length']} item{'s' if got['min_length'] != 1 else ''}")
    return tuple(parts)


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    keys = ("ge", "gt", "le", "lt", "min_length")
    return {k: getattr(m, k) for m in metadata for k in keys if getattr(m, k, None) is not None}


def _shape(tp: Any, metadata: list[Any] | None = None) -> _Shape:
    """The YAML-facing shape of an annotation (see `_Shape`)."""
    metadata = list(metadata or [])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _shape(args[0], metadata + list(tp.__metadata__))
    bounds = _constraints(metadata)
    if origin in (typing.Union, types.UnionType):
        return _union(args, bounds)
    choices = next((m.choices() for m in metadata if hasattr(m, "choices")), None)  # a registry's names
    if origin is Literal or choices is not None:
        args = args if choices is None else choices
        kinds = sorted({type(a).__name__ for a in args})
        return _Shape(" or ".join(kinds), ("one of " + ", ".join(f"`{_json(a)}`" for a in args),) + bounds)
    if origin is list:
        item = _shape(args[0])
        allowed = tuple(f"items: {a}" for a in item.allowed) + bounds
        nested = tuple((s if s.startswith("[") else f"[]{s}", m) for s, m in item.nested)
        text = f"({item.text})" if " or " in item.text else item.text
        return _Shape(f"list of {text}", allowed, nested)
    if origin is tuple:
        return _Shape("[" + ", ".join(_shape(a).text for a in args) + "]", bounds)
    if origin is dict:
        key, value = _shape(args[0]), _shape(args[1])
        allowed = tuple(f"keys: {a}" for a in key.allowed) + bounds
        return _Shape(f"mapping {key.text} → {value.text}", allowed)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if "variants" in vars(tp):  # a base validated as one of its variants (by `kind`)
            return _union(tuple(tp.variants()), bounds)
        if tp in _VALUE_MODELS:
            return _Shape(_VALUE_MODELS[tp], bounds)
        return _Shape("mapping", bounds, (("", tp),))
    return _Shape(_NAMES.get(tp, getattr(tp, "__name__", str(tp))), bounds)


def _union(args: tuple[Any, ...], bounds: tuple[str, ...]) -> _Shape:
    parts = [_shape(a) for a in args]
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel) and a not in _VALUE_MODELS]
    if models and len(models) == len([a for a in args if a is not type(None)]) and len(models) > 1:
        nested = tuple((f"[kind={m.model_fields['kind'].default}]", m) for m in models)
        text = "one of " + ", ".join(str(m.model_fields["kind"].default) for m in models) + " (by `kind`)"
        return _Shape(text, bounds, nested)
    allowed = tuple(a for p in parts for a in p.allowed) + bounds
    nested = tuple(n for p in parts for n in p.nested)
    return _Shape(" or ".join(dict.fromkeys(p.text for p in parts)), allowed, nested)


# --------------------------------------------------------------------------- values


def _doc(cls: type) -> str:
    """A class docstring's first paragraph on one line."""
    text = inspect.cleandoc(cls.__doc__ or "")
    return " ".join(text.split("\n\n")[0].split())


def _plain(value: Any) -> Any:
    """A default as it would be written in YAML (a dist in its shorthand)."""
    if isinstance(value, Dist):
        if value.type == "const":
            return value.value
        if value.type == "categorical":
            return value.choices
        return value.model_dump(mode="json", exclude_defaults=True)  # `type` is required: always kept
    if isinstance(value, BaseModel):
        return {info.alias or name: _plain(getattr(value, name)) for name, info in type(value).model_fields.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _json(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel) and type(value) not in _VALUE_MODELS:
        return "(the fields below)"
    return f"`{_json(value)}`"


def _description(info: FieldInfo, shape: _Shape) -> str | None:
    """The field's description, else (a model-typed field) its class docstring, else None."""
    if info.description:
        return " ".join(info.description.split())
    if len(shape.nested) == 1 and shape.nested[0][0] in ("", "[]"):
        return _doc(shape.nested[0][1]) or None
    return None


# --------------------------------------------------------------------------- walking


def _walk(cls: type[BaseModel], prefix: str, expand: bool, out: list[_Section], missing: list[str]) -> None:
    """Append `cls`'s section (key `prefix`) and, when `expand`, its nested models' sections."""
    section = _Section(prefix, _doc(cls))
    out.append(section)
    later: list[tuple[type[BaseModel], str]] = []
    for name, info in cls.model_fields.items():
        key = f"{prefix}.{info.alias or name}" if prefix else (info.alias or name)
        shape = _shape(info.annotation, info.metadata)
        desc = _description(info, shape)
        if desc is None:
            missing.append(f"{cls.__name__}.{name}")
        text = shape.text
        if not expand and shape.nested:
            text = text.replace("mapping", " or ".join(m.__name__ for _, m in shape.nested))
        section.rows.append(_Row(key, text, _default(info), ", ".join(shape.allowed), desc or "(undocumented)"))
        if expand:
            later += [(m, key + suffix) for suffix, m in shape.nested]
    for model, key in later:
        _walk(model, key, expand, out, missing)


def _sections(cls: type[BaseModel], expand: bool = True, prefix: str = "") -> tuple[list[_Section], list[str]]:
    out: list[_Section] = []
    missing: list[str] = []
    _walk(cls, prefix, expand, out, missing)
    return out, missing


def missing_descriptions() -> list[str]:
    """`Model.field` of every rendered field that has no description (should be empty)."""
    missing: list[str] = []
    for cls, expand in [(SearchSpace, True), (Dist, True), *BLOCKS.values()]:
        missing += _sections(cls, expand)[1]
    return sorted(set(missing))


# --------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[_Row]) -> list[str]:
    lines = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for r in rows:
        cells = (f"`{r.key}`", r.type, r.default, r.allowed, r.description)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _render(sections: list[_Section], level: int, top: str) -> list[str]:
    lines: list[str] = []
    for s in sections:
        head = f"`{s.key}`" if s.key else top
        lines += ["", f"{'#' * level} {head}", "", s.title, "", *_table(s.rows)]
    return lines


_SPACE_INTRO = """\
# Search-space reference (`search_spaces/*.yaml`)

<!-- Generated by searchvlm.schema.doc from the pydantic field docs; do not edit by hand.
     Regenerate: python -m searchvlm.schema.doc (tests/test_schema_doc.py checks it). -->

Every key a search-space file may hold, generated from the schema's field docs
(`searchvlm schema` prints this page, `searchvlm schema --json` the JSON schema). Unknown
keys are errors. `--set key.path=value` on `trial`, `sweep` and `reproduce` overrides a
mapping key by its dotted path (`--set training.steps=200`; the value is parsed as YAML, a
list or mapping replaces the whole value). Defaults are shown as JSON; `required` keys have
none. Key paths: `a.b` is a nested mapping, `a[]` an item of a list, `[kind=fastv]` the
item of a schedule list whose `kind` is `fastv`. The definitions behind the numbers (FLOPs,
synergy, modes, selectors, presets) are in [definitions.md](definitions.md).

`model`, `data`, `training`, `synergy` and `seeds` are fixed for every trial (they form
the `TrialConfig`); `policy` holds the searched dimensions: every list there is a set of
choices (a single value is one fixed choice), and every schedule parameter is a
[dist](#dist-one-searched-number)."""

_SPACE_RULES = """\

## Rules checked across keys

Besides each key's own type and range, `searchvlm validate` (and every command that loads a
space) checks, reporting every problem with its key path:

- `policy.generation.mode` never holds `drop` (it would delete the image tokens generation
  predicts), and `policy.generation.selector` never holds `attention` or `pdrop` (they rank
  the whole image, which in generation would read later targets); see
  [definitions.md](definitions.md#causality).
- schedule values fit the model depth: ratios, floors and keep ratios in [0, 1], `start` in
  [1, L−1], `shift` in [0, L−1], `boundaries` in [1, L−1] (L = `model.num_layers`);
  `policy.sharing.scope` layers in [0, L−1].
- `search.scheduler.kind: mo_asha` needs its first rung (`grace_steps`, default
  `training.eval_every`) below the last step; `search.sampler: grid` needs every
  dimension finite (a `step` on float and int dists).
- `model.hidden_size` divisible by `model.num_heads`, `model.num_heads` by
  `model.num_kv_heads`; `constraints` are `metric <= x` or `metric >= x` with a metric
  from the objectives' list (parsed by a regex, never evaluated).
- with `drop` the compiled keep list of a sampled point is clamped to be non-increasing
  (a repair, not an error: every sampled point is a valid policy).
"""


def space_reference() -> str:
    """The Markdown YAML reference of a search space (the text of `docs/space.md`)."""
    sections, _ = _sections(SearchSpace)
    (dist,), _ = _sections(Dist, prefix="<dist>")
    dist.title += (
        " Every schedule parameter in `policy.*.schedules[...]` is one, written as a "
        "scalar (`ratio: 0.5`), a list (`k: [1, 2, 3]`) or a mapping with `type` "
        "(`floor: {type: float, low: 0.1, high: 0.9}`)."
    )
    lines = [_SPACE_INTRO, *_render(sections, 2, "Top level")]
    lines += ["", "## dist: one searched number", "", dist.title, "", *_table(dist.rows)]
    return "\n".join(lines) + "\n" + _SPACE_RULES


def space_json_schema() -> dict[str, Any]:
    """The JSON schema of a search-space file (pydantic's)."""
    return SearchSpace.model_json_schema()


def render_block(name: str) -> str:
    """The generated Markdown of block `name` (a key of `BLOCKS`)."""
    cls, expand = BLOCKS[name]
    sections, _ = _sections(cls, expand)
    lines = _render(sections, 4, f"`{cls.__name__}`")
    return "\n".join(lines[1:]) + "\n"


def sync_blocks(text: str) -> str:
    """`text` with every `BEGIN GENERATED: NAME` block re-rendered."""

    def fill(m: re.Match) -> str:
        if m.group(2) not in BLOCKS:
            raise KeyError(f"unknown generated block {m.group(2)!r}; known: {', '.join(BLOCKS)}")
        return m.group(1) + render_block(m.group(2)) + m.group(4)

    return _BLOCK.sub(fill, text)


# --------------------------------------------------------------------------- files


def _expected(root: Path) -> dict[Path, str]:
    out = {root / SPACE_DOC: space_reference()}
    for rel in BLOCK_DOCS:
        path = root / rel
        if path.exists():
            out[path] = sync_blocks(path.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/space.md and the generated blocks (`--check`: list stale files, exit 1)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parents[2]  # searchvlm/schema/doc.py -> the repository
    stale = [p for p, text in _expected(root).items() if not p.exists() or p.read_text() != text]
    if "--check" in args:
        for p in stale:
            print(f"out of date: {p.relative_to(root)}")
        return 1 if stale else 0
    for p in stale:
        p.write_text(_expected(root)[p])
        print(f"wrote {p.relative_to(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
