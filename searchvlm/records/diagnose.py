"""The `diagnose` command as a function (L4 module): `run_diagnose` measures a policy's two
task gradients per layer and parameter group (`searchvlm.train.gradients`) on the space's model
at initialisation and at the joint run's best validation rounds, and writes diagnose.json
and its heatmap (docs/diagnose.md).

The trained checkpoints come from the trial machinery: one joint `Run` of the space's
training (seed, data, steps, batch, loss weights), scored on validation at every evaluation
round; a task's checkpoint is its earliest best round, as `synergy.at: best` picks it
(understanding accuracy; generation on `synergy.gen_metric`, NLL where that metric is not
scored per round). `steps` trains a shorter budget (the learning-rate schedule then spans
it), 0 measures initialisation only; the report says which.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from searchvlm.data import UnifiedData
from searchvlm.objectives.synergy import GEN_METRICS, HIGHER_IS_BETTER, best_step
from searchvlm.report._gradients import gradients_info, gradients_png
from searchvlm.schema._host import machine
from searchvlm.schema.config import TrialConfig
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.metrics import UND_METRIC, metric_info
from searchvlm.schema.policy import TASKS, ReductionPolicy
from searchvlm.schema.space import load_space, trial_policy
from searchvlm.train.gradients import GROUPS, Measurement, fixed_batches, measure
from searchvlm.train.training import Run, RunSpec, check_layout, precision, resolve_device
from searchvlm.train.trial import eval_steps, prepare

DIAGNOSE_SCHEMA = "searchvlm.diagnose/v1"
DIAGNOSE_FILE = "diagnose.json"


@dataclass(frozen=True)
class DiagnoseRequest:
    """What `run_diagnose` measures: the policy (`preset` or the `policy` file, one of them),
    the model's `seed` (default the space's first), the training budget (`steps`, default the
    space's; 0: initialisation only), `batches` fixed training batches per task (of the
    space's batch size), torch `threads` (default `training.threads`) and `--set` overrides."""

    preset: str | None = None
    policy: str | Path | None = None
    seed: int | None = None
    steps: int | None = None
    batches: int = 4
    threads: int | None = None
    overrides: list[str] | None = None


class CheckpointGradients(BaseModel):
    """The measurement at one checkpoint (per group: `searchvlm.train.gradients.GroupStats`)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="'init', or 'best ' + the metrics whose best validation round it is")
    step: int = Field(description="training steps done")
    picked_by: list[str] = Field(description="validation metrics whose earliest best round this is")
    val: dict[str, float] = Field(description="validation scores at this round (empty at init)")
    layers: list[dict[str, dict]] = Field(description="per layer (0-based), group -> GroupStats")
    outside: dict = Field(description="GroupStats of the parameters outside the layers (embeddings, final norm, head)")
    overall: dict = Field(description="GroupStats of the whole model's gradient (image copies added back)")


class DiagnoseReport(BaseModel):
    """What `diagnose` writes to diagnose.json (plain numbers; reloadable)."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(DIAGNOSE_SCHEMA, alias="schema")
    space: str = Field(description="the search space file")
    space_hash: str = Field(description="hash of the search space (after --set)")
    policy: ReductionPolicy = Field(description="the policy measured (explicit)")
    model: dict = Field(description="model config (num_layers, ...)")
    seed: int = Field(description="seed of the model's initialisation, training order and the batches")
    batches: int = Field(description="fixed training batches per task the numbers are averaged over")
    batch_size: int = Field(description="examples per task per batch")
    loss_weights: dict[str, float] = Field(description="task -> weight of its loss (as in training)")
    steps: int = Field(description="training steps of this run (0: initialisation only)")
    space_steps: int = Field(description="the space's training.steps")
    budget: str = Field(description="'space' (the space's steps), 'reduced' or 'extended' (--steps), 'init' (0)")
    groups: list[str] = Field(description="the parameter groups of every layer, in order")
    checkpoints: list[CheckpointGradients]
    val_curves: dict[str, dict[int, float]] = Field(
        description="metric -> step -> validation value of the joint run (what picked the checkpoints; empty at init)"
    )
    seconds: dict[str, float] = Field(
        description="wall seconds (data, train with validation, measure, total) and the process's CPU seconds (cpu)"
    )
    machine: dict[str, str] = Field(description="cpu model, cores, torch version")

    def dump(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)


@dataclass(frozen=True)
class DiagnoseOutcome:
    """What `run_diagnose` measured and wrote (`files`: json, png)."""

    report: DiagnoseReport
    files: dict[str, Path]


def run_diagnose(
    space_file: str | Path, request: DiagnoseRequest, *, out_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
) -> DiagnoseOutcome:  # fmt: skip
    """The `diagnose` command: measure as `request` says and write diagnose.json and
    diagnose.png to `out_dir` (default `<runs_dir>/diagnose-<space>-<policy>`)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    r = request
    if r.batches < 1:
        raise ConfigError(COMMAND_LINE, "--batches", r.batches, "must be a whole number >= 1")
    if r.steps is not None and r.steps < 0:
        raise ConfigError(COMMAND_LINE, "--steps", r.steps, "must be 0 (initialisation only) or more")
    space = load_space(space_file, r.overrides)
    policy = trial_policy(space, r.preset, r.policy)
    config = space.trial_config(policy, name=policy.name or "policy")
    if r.seed is not None:
        config = config.model_copy(update={"seeds": [r.seed]})
    torch.set_num_threads(r.threads or config.training.threads or torch.get_num_threads())
    data, model_cfg = prepare(config)
    check_layout(policy, data)
    steps = config.training.steps if r.steps is None else r.steps
    training = config.training.model_copy(update={"steps": max(1, steps)})
    seed, device = config.seeds[0], resolve_device(config.training.device)
    batches = [{t: b[t].to(device) for t in TASKS} for b in fixed_batches(data, training.batch_size, r.batches, seed)]
    weights = {t: float(training.loss_weights.get(t, 1.0)) for t in TASKS}
    run = Run(RunSpec(model_cfg, policy, training, TASKS, seed), data, device)
    seconds = {"data": time.perf_counter() - start}

    def measured(label: str, step: int, picked: list[str], val: dict[str, float]) -> CheckpointGradients:
        with precision(device, training.dtype):
            m = measure(run.model, batches, weights)
        return _checkpoint(label, step, picked, val, m)

    t = time.perf_counter()
    checkpoints = [measured("init", 0, [], {})]
    seconds["measure"] = time.perf_counter() - t
    curves: dict[str, dict[int, float]] = {}
    if steps > 0:
        t = time.perf_counter()
        picks, curves = _train(run, data, config, steps)
        seconds["train"] = time.perf_counter() - t
        t = time.perf_counter()
        for step, (state, metrics, val) in sorted(picks.items()):
            run.model.load_state_dict(state)
            checkpoints.append(measured("best " + " + ".join(metrics), step, metrics, val))
        seconds["measure"] += time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    seconds["cpu"] = time.process_time() - cpu_start  # all threads; on shared cores less than the wall time
    report = DiagnoseReport(
        space=str(space_file), space_hash=space.space_hash(), policy=policy, model=model_cfg.model_dump(mode="json"),
        seed=seed, batches=r.batches, batch_size=training.batch_size, loss_weights=weights, steps=steps,
        space_steps=config.training.steps, budget=_budget(steps, config.training.steps), groups=list(GROUPS),
        checkpoints=checkpoints, val_curves=curves, seconds={k: round(v, 2) for k, v in seconds.items()},
        machine=_machine(),
    )  # fmt: skip
    name = f"diagnose-{Path(space_file).stem}-{policy.name or 'policy'}"
    target = Path(out_dir) if out_dir else Path(runs_dir) / name
    return DiagnoseOutcome(report, write_outputs(report, target))


Picks = dict[int, tuple[dict, list[str], dict[str, float]]]  # step -> state, metrics picking it, val scores


def _train(run: Run, data: UnifiedData, config: TrialConfig, steps: int) -> tuple[Picks, dict[str, dict[int, float]]]:
    """Train the joint run, scoring validation every round; per picked round (the earliest
    best of understanding accuracy and of the generation metric) its state, the metrics that
    pick it and its validation scores; and the validation curves."""
    gen = GEN_METRICS[config.synergy.gen_metric]
    metrics = (UND_METRIC, gen if metric_info(gen).scorer is not None else "gen_nll")  # fidelity: final model only
    curves: dict[str, dict[int, float]] = {m: {} for m in metrics}
    kept: dict[str, tuple[int, dict, dict]] = {}
    for step in eval_steps(steps, config.training.eval_every):
        run.train_until(step)
        scores = run.scores(data, "val", (*metrics, "gen_nll"))
        val = {m: s.value for m, s in scores.items()}
        for m in metrics:
            curves[m][step] = val[m]
            if best_step(curves[m], HIGHER_IS_BETTER[m]) == step:
                kept[m] = (step, {k: v.detach().clone() for k, v in run.model.state_dict().items()}, val)
    picks: Picks = {}
    for m, (step, state, val) in kept.items():
        picks.setdefault(step, (state, [], val))[1].append(m)
    return picks, curves


def _checkpoint(label: str, step: int, picked: list[str], val: dict[str, float], m: Measurement) -> CheckpointGradients:
    row = dataclasses.asdict
    return CheckpointGradients(
        label=label, step=step, picked_by=picked, val=val,
        layers=[{g: row(s) for g, s in layer.items()} for layer in m.layers],
        outside=row(m.outside), overall=row(m.overall),
    )  # fmt: skip


def _budget(steps: int, space_steps: int) -> str:
    if steps == 0:
        return "init"
    return "space" if steps == space_steps else ("reduced" if steps < space_steps else "extended")


def _machine() -> dict[str, str]:
    """The CPU model (`searchvlm.schema._host.cpu_model`: numbers differ between CPU types more than
    between seeds), core count and torch version."""
    return {"cpu": machine(), "cores": str(os.cpu_count()), "torch": torch.__version__}


def write_outputs(report: DiagnoseReport, out_dir: Path) -> dict[str, Path]:
    """diagnose.json and diagnose.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DIAGNOSE_FILE).write_text(report.dump())
    return {"json": out_dir / DIAGNOSE_FILE, "png": gradients_png(gradients_info(report), out_dir / "diagnose.png")}


def load_report(path: str | Path) -> DiagnoseReport:
    """A saved diagnose.json (validated)."""
    from searchvlm.schema.errors import load_json, validate

    return validate(DiagnoseReport, load_json(Path(path)), Path(path))


__all__ = ["DIAGNOSE_FILE", "DiagnoseOutcome", "DiagnoseReport", "DiagnoseRequest", "load_report", "run_diagnose"]
