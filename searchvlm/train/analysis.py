"""Layerwise attention allocation (the study's Eq. 2) and the keep schedule derived from it.

L3 module (torch, model, data; no ray / mlflow). For every layer ℓ and key segment S,

    α_S(ℓ) = mean over examples and query rows i of (1/H) Σ_h Σ_{j∈S} A(ℓ,h)[i,j],

measured on held-out batches of each task through `ReducedLM(..., output_attentions=True)`;
the four shares of a layer sum to 1 (renormalised against float drift). Under a reduced
policy, tokens that are not queries / keys in a layer contribute no row / column. Beside
the all-rows α (the study's figure 3), `by_query` splits the rows by the query's segment,
and `heatmap` is one layer's (T, T) attention averaged over heads and examples (figure 2).
In our layout generation's targets are its image tokens: its `output` share is always 0.

`derive_policy` turns the image share into a per-task keep schedule:
keep[ℓ] = clip(α_image(ℓ) / max_ℓ α_image, floor, 1): the layer where a task looks at the
image most stays dense, the others keep image tokens in proportion to the attention they
get (never fewer than `floor`). `warm_start_policy` is what a sweep with
`search.warm_start: analysis` enqueues first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from searchvlm.data import TaskSplit, UnifiedData
from searchvlm.model import ReducedLM
from searchvlm.schema.config import ModelConfig, TrainingConfig
from searchvlm.schema.errors import ConfigError
from searchvlm.schema.policy import SEGMENTS, TASKS, Mode, PolicyFile, ReductionPolicy, Selector, TaskPolicy
from searchvlm.schema.space import SearchSpace
from searchvlm.train.checkpoint import load_checkpoint
from searchvlm.train.training import Run, RunSpec, resolve_device
from searchvlm.train.trial import prepare

ANALYSIS_SCHEMA = "searchvlm.analysis/v1"
ANALYSIS_FILE = "analysis.json"
DEFAULT_FLOOR = 0.25
DEFAULT_MODES: dict[str, Mode] = {"understanding": "query_drop", "generation": "skip"}
TARGET_ROWS = {"understanding": "output", "generation": "image"}  # the rows that make predictions

Curves = dict[str, list[float]]  # segment -> one value per layer


class AnalysisReport(BaseModel):
    """What `analyze` writes to analysis.json (plain numbers; reloadable)."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(ANALYSIS_SCHEMA, alias="schema")
    source: str = Field(description="dense | policy | checkpoint:<path>")
    space_hash: str | None = Field(None, description="hash of the search space analysed")
    model: dict = Field(description="model config (num_layers, ...)")
    policy: ReductionPolicy = Field(description="the policy the analysed model ran under")
    steps: int = Field(description="training steps of the analysed model")
    split: str = Field(description="data split the batches came from")
    examples: dict[str, int] = Field(description="examples per task")
    alpha: dict[str, Curves] = Field(description="task -> segment -> α per layer (all query rows)")
    by_query: dict[str, dict[str, Curves]] = Field(
        description="task -> query segment -> key segment -> share per layer (rows of that segment)"
    )
    heatmap_layer: int = Field(description="layer of `heatmap` (0-based)")
    heatmap: dict[str, list[list[float]]] = Field(description="task -> (T, T) mean attention")
    segment_layout: dict[str, list[int]] = Field(description="task -> segment code per position")
    uniform: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="task -> segment -> α that uniform causal attention over the same layout gives "
        "(all rows, no reduction): the chance level to read `alpha` against",
    )

    def dump(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)


# --------------------------------------------------------------------------- measuring


def _layer_sums(probs: Tensor, pos_q: Tensor, pos_k: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """Head-averaged attention mass from each query segment to each key segment, summed over
    rows and examples: (4 query segments, 4 key segments), and the row counts (4,)."""
    n_seg = len(SEGMENTS)
    key_seg = torch.nn.functional.one_hot(segments.gather(1, pos_k), n_seg).float()  # (B, n_kv, 4)
    q_seg = torch.nn.functional.one_hot(segments.gather(1, pos_q), n_seg).float()  # (B, n_q, 4)
    rows = torch.matmul(probs.float().mean(dim=1), key_seg)  # (B, n_q, 4): share per key segment
    sums = torch.einsum("bqs,bqk->sk", q_seg, rows)  # (4, 4)
    return sums, q_seg.sum(dim=(0, 1))  # (4, 4), (4,)


def _heatmap_sum(probs: Tensor, pos_q: Tensor, pos_k: Tensor, seq: int) -> Tensor:
    """Head-averaged probabilities placed at their original (query, key) positions, summed
    over the batch: (T, T); rows / columns of absent tokens stay 0."""
    b = probs.shape[0]
    grid = probs.new_zeros(b, seq, seq, dtype=torch.float32)  # (B, T, T)
    batch = torch.arange(b, device=probs.device)[:, None, None]  # (B, 1, 1)
    grid[batch, pos_q[:, :, None], pos_k[:, None, :]] = probs.float().mean(dim=1)  # (B, n_q, n_kv)
    return grid.sum(dim=0)  # (T, T)


@torch.no_grad()
def measure(
    model: ReducedLM, split: TaskSplit, task: str, heatmap_layer: int, batch: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """One task's attention over `split`: mass sums (L, 4, 4), row counts (L, 4), heatmap (T, T)."""
    model.eval()
    layers, seq = model.policy.num_layers, split.seq_len
    sums, counts = torch.zeros(layers, 4, 4), torch.zeros(layers, 4)
    heat = torch.zeros(seq, seq)
    for start in range(0, len(split), batch):
        b = split.batch(torch.arange(start, min(len(split), start + batch)))
        out = model(b.input_ids, segments=b.segments, task=task, output_attentions=True)
        for li, (probs, (pq, pk)) in enumerate(zip(out.attentions, out.attention_positions)):
            s, c = _layer_sums(probs, pq, pk, b.segments)
            sums[li] += s.cpu()
            counts[li] += c.cpu()
            if li == heatmap_layer:
                heat += _heatmap_sum(probs, pq, pk, seq).cpu()
    return sums, counts, heat / max(1, len(split))


def shares(sums: Tensor, counts: Tensor) -> Tensor:
    """α per layer and key segment over all query rows, each layer summing to 1: (L, 4)."""
    alpha = sums.sum(dim=1) / counts.sum(dim=1, keepdim=True).clamp(min=1)  # (L, 4)
    return alpha / alpha.sum(dim=1, keepdim=True).clamp(min=1e-12)


def uniform_shares(layout: list[int]) -> dict[str, float]:
    """α of uniform causal attention over one sequence layout (all rows): the chance level."""
    seg = torch.nn.functional.one_hot(torch.tensor(layout), len(SEGMENTS)).double()  # (T, 4)
    visible = seg.cumsum(dim=0) / torch.arange(1, len(layout) + 1)[:, None]  # (T, 4)
    return {name: float(x) for name, x in zip(SEGMENTS, visible.mean(dim=0))}


def _curves(alpha: Tensor) -> Curves:
    """(L, 4) -> segment -> list over layers."""
    return {name: [float(x) for x in alpha[:, i]] for i, name in enumerate(SEGMENTS)}


def _by_query(sums: Tensor, counts: Tensor) -> dict[str, Curves]:
    out = {}
    for qi, q in enumerate(SEGMENTS):
        if bool((counts[:, qi] > 0).any()):
            out[q] = _curves(sums[:, qi] / counts[:, qi : qi + 1].clamp(min=1))  # (L, 4)
    return out


def _heatmap_layer(layer: int | None, layers: int) -> int:
    if layer is not None and not 0 <= layer < layers:
        raise ConfigError(None, "--heatmap-layer", layer, f"must be a layer in [0, {layers - 1}]")
    return layers // 2 if layer is None else layer


@dataclass(frozen=True)
class ModelOrigin:
    """What an analysed model is, as its report records it: `source` (dense | policy |
    checkpoint:<path>), the steps it trained, the hash of its search space and its model config."""

    source: str = "dense"
    steps: int = 0
    space_hash: str | None = None
    model_config: ModelConfig | None = None


def analyze_model(
    model: ReducedLM,
    data: UnifiedData,
    *,
    split: str = "test",
    max_examples: int = 256,
    heatmap_layer: int | None = None,
    origin: ModelOrigin = ModelOrigin(),
) -> AnalysisReport:
    """Attention allocation of a trained model on the first `max_examples` rows of `split`."""
    layers = model.policy.num_layers
    layer = _heatmap_layer(heatmap_layer, layers)
    device = next(model.parameters()).device
    alpha, by_query, heat, layout, examples = {}, {}, {}, {}, {}
    for task in TASKS:
        rows = data.split(split, task)
        rows = rows.batch(torch.arange(min(len(rows), max_examples))).to(device)
        sums, counts, heatmap = measure(model, rows, task, layer)
        alpha[task], by_query[task] = _curves(shares(sums, counts)), _by_query(sums, counts)
        heat[task] = [[round(float(x), 6) for x in r] for r in heatmap]
        layout[task], examples[task] = [int(s) for s in rows.segments[0].cpu()], len(rows)
    cfg = origin.model_config.model_dump(mode="json") if origin.model_config else {"num_layers": layers}
    return AnalysisReport(
        source=origin.source, space_hash=origin.space_hash, model=cfg, policy=model.policy, steps=origin.steps,
        split=split, examples=examples, alpha=alpha, by_query=by_query, heatmap_layer=layer,
        heatmap=heat, segment_layout=layout, uniform={t: uniform_shares(v) for t, v in layout.items()},
    )  # fmt: skip


# --------------------------------------------------------------------------- models


def train_model(
    space: SearchSpace, policy: ReductionPolicy | None = None, steps: int | None = None
) -> tuple[ReducedLM, UnifiedData, ModelConfig, int]:
    """Train the space's unified (joint) model under `policy` (None: dense), seed = first seed."""
    training: TrainingConfig = space.training
    if steps is not None:
        training = training.model_copy(update={"steps": steps})
    config = space.trial_config(policy).model_copy(update={"training": training})
    data, model_cfg = prepare(config)
    spec = RunSpec(model_cfg, config.resolved_policy(), training, TASKS, space.seeds[0])
    run = Run(spec, data, resolve_device(training.device))
    run.train_until(training.steps)
    return run.model, data, model_cfg, run.step


# --------------------------------------------------------------------------- derived policy


def derived_keep(image_share: list[float], floor: float = DEFAULT_FLOOR) -> list[float]:
    """keep[ℓ] = clip(α_image(ℓ) / max α_image, floor, 1) (all ones when the share is 0)."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor = {floor} must be in [0, 1]")
    top = max(image_share)
    if top <= 0:
        return [1.0] * len(image_share)
    return [round(min(1.0, max(floor, a / top)), 6) for a in image_share]


def _running_min(keep: list[float]) -> list[float]:
    out, low = [], 1.0
    for k in keep:
        low = min(low, k)
        out.append(low)
    return out


def derive_policy(
    report: AnalysisReport,
    floor: float = DEFAULT_FLOOR,
    modes: dict[str, Mode] | None = None,
    selectors: dict[str, Selector] | None = None,
    rows: Literal["all", "targets"] = "all",
) -> ReductionPolicy:
    """Per-task keep schedules following each task's image share (`derived_keep`); modes
    default to understanding `query_drop`, generation `skip`; `drop` keeps the running minimum.
    rows: `all` follows Eq. 2's α (every query row); `targets` the image share of the rows
    that predict the task's targets (understanding: output, generation: image)."""
    modes = {**DEFAULT_MODES, **(modes or {})}
    selectors = {t: "stride" for t in TASKS} | (selectors or {})
    tasks = {}
    for task in TASKS:
        curves = report.alpha[task] if rows == "all" else report.by_query[task][TARGET_ROWS[task]]
        keep = derived_keep(curves["image"], floor)
        keep = _running_min(keep) if modes[task] == "drop" else keep
        tasks[task] = TaskPolicy(keep=keep, mode=modes[task], selector=selectors[task])
    return ReductionPolicy(num_layers=len(tasks["understanding"].keep), name="analysis", **tasks)


def space_modes(space: SearchSpace) -> tuple[dict[str, Mode], dict[str, Selector]]:
    """The default modes / stride selector where the space offers them, else its first choice."""
    modes, selectors = {}, {}
    for task in TASKS:
        ts = getattr(space.policy, task)
        modes[task] = DEFAULT_MODES[task] if DEFAULT_MODES[task] in ts.mode else ts.mode[0]
        selectors[task] = "stride" if "stride" in ts.selector else ts.selector[0]
    return modes, selectors


def policy_file(policy: ReductionPolicy, report: AnalysisReport, floor: float, rows: str = "all") -> PolicyFile:
    """An exportable policy file with the analysis as provenance."""
    from searchvlm import __version__

    provenance = {"source": "analysis", "analysed": report.source, "space_hash": report.space_hash,
                  "floor": floor, "rows": rows, "steps": report.steps, "package_version": __version__}  # fmt: skip
    return PolicyFile(policy=policy, model=report.model, objectives={}, provenance=provenance)


# --------------------------------------------------------------------------- outputs


def plot_allocation(report: AnalysisReport, path: Path) -> Path:
    """Figure 3: per task, α of each segment across depth (`searchvlm.train._allocation`)."""
    from searchvlm.train._allocation import allocation_info, allocation_png

    return allocation_png(allocation_info(report), path)


def plot_heatmap(report: AnalysisReport, path: Path) -> Path:
    """Figure 2: the chosen layer's attention, averaged over heads and examples (log colour;
    `searchvlm.train._heatmap`)."""
    from searchvlm.train._heatmap import heatmap_info, heatmap_png

    return heatmap_png(heatmap_info(report), path)


def write_outputs(report: AnalysisReport, out_dir: Path) -> dict[str, Path]:
    """analysis.json, allocation.png, heatmap.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ANALYSIS_FILE).write_text(report.dump())
    return {
        "json": out_dir / ANALYSIS_FILE,
        "allocation": plot_allocation(report, out_dir / "allocation.png"),
        "heatmap": plot_heatmap(report, out_dir / "heatmap.png"),
    }


def load_report(path: str | Path) -> AnalysisReport:
    """A saved analysis.json (validated)."""
    from searchvlm.schema.errors import load_json, validate

    return validate(AnalysisReport, load_json(Path(path)), Path(path))


# --------------------------------------------------------------------------- entry points


def analyze(
    space: SearchSpace,
    *,
    policy: ReductionPolicy | None = None,
    checkpoint: str | Path | None = None,
    steps: int | None = None,
    max_examples: int = 256,
    heatmap_layer: int | None = None,
) -> AnalysisReport:
    """Train the space's joint model (dense, or under `policy`), or load `checkpoint`, and
    measure its attention allocation on the held-out test split (`training.threads` applied)."""
    _heatmap_layer(heatmap_layer, space.model.num_layers)
    if space.training.threads:
        torch.set_num_threads(space.training.threads)
    if checkpoint is not None:
        model, model_cfg, meta = load_checkpoint(checkpoint)
        data, space_cfg = prepare(space.trial_config(None))
        if space_cfg != model_cfg:
            raise ConfigError(checkpoint, "model_config", json.loads(meta["model_config"]),
                              f"does not match the space's model and data vocabulary "
                              f"{space_cfg.model_dump(mode='json')}")  # fmt: skip
        source, trained = f"checkpoint:{checkpoint}", int(meta.get("steps", 0))
    else:
        model, data, model_cfg, trained = train_model(space, policy, steps)
        source = "dense" if policy is None or policy.is_dense else "policy"
    origin = ModelOrigin(source, trained, space.space_hash(), model_cfg)
    return analyze_model(model, data, max_examples=max_examples, heatmap_layer=heatmap_layer, origin=origin)


def warm_start_policy(space: SearchSpace, run_dir: str | Path, floor: float = DEFAULT_FLOOR) -> ReductionPolicy:
    """The derived policy a sweep enqueues first (`search.warm_start: analysis`): reuses
    `<run_dir>/analysis.json` when it analysed the dense model of this very space, else
    analyses (and writes it with its plots)."""
    run_dir = Path(run_dir)
    cached = run_dir / ANALYSIS_FILE
    report = load_report(cached) if cached.exists() else None
    if report is None or report.space_hash != space.space_hash() or report.source != "dense":
        report = analyze(space)
        write_outputs(report, run_dir)
    modes, selectors = space_modes(space)
    return derive_policy(report, floor, modes, selectors)


__all__ = [
    "ANALYSIS_FILE", "SEGMENTS", "AnalysisReport", "ModelOrigin", "analyze", "analyze_model", "derive_policy",
    "derived_keep", "load_checkpoint", "load_report", "measure", "policy_file", "shares",
    "space_modes", "train_model", "uniform_shares", "warm_start_policy", "write_outputs",
]  # fmt: skip
