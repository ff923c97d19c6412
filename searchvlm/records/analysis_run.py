"""The `analyze` command as a function (L4 module): `run_analysis` analyses a space's model
(`searchvlm.train.analysis.analyze`), derives a policy from it, writes analysis.json, the plots
and the policy file, and logs them to MLflow when given a tracking URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.policy import ReductionPolicy, load_policy
from searchvlm.schema.space import load_space
from searchvlm.train.analysis import (
    DEFAULT_FLOOR,
    AnalysisReport,
    analyze,
    derive_policy,
    policy_file,
    space_modes,
    write_outputs,
)

__all__ = ["AnalysisOutcome", "AnalysisRequest", "run_analysis"]


@dataclass(frozen=True)
class AnalysisRequest:
    """What `run_analysis` analyses and derives: the model (dense, under the policy file
    `policy`, or a trial's `checkpoint`; trained `steps`, default the space's, on `threads`
    torch threads, default `training.threads`), the measurement (`max_examples` held-out rows
    per task, the heatmap's 0-based layer, default L//2) and the derived policy (`floor`: its
    lowest keep ratio; `rows`: `all` query rows, the study's Eq. 2, or the task's `targets`)."""

    policy: str | Path | None = None
    checkpoint: str | Path | None = None
    steps: int | None = None
    max_examples: int = 256
    heatmap_layer: int | None = None
    floor: float = DEFAULT_FLOOR
    rows: str = "all"
    threads: int | None = None


@dataclass(frozen=True)
class AnalysisOutcome:
    """What `run_analysis` measured, derived and wrote (`files`: name -> path, the derived
    policy file last; `run_id`: its MLflow run, None when not logged)."""

    report: AnalysisReport
    derived: ReductionPolicy
    files: dict[str, Path]
    run_id: str | None = None

    def alpha_rows(self) -> list[tuple[str, list[float]]]:
        """The α table: one row per task and segment, then the task's uniform image share."""
        out = []
        for task, curves in self.report.alpha.items():
            out += [(f"{task} / {seg}", vals) for seg, vals in curves.items()]
            out.append((f"{task} / image if uniform", [self.report.uniform[task]["image"]] * len(curves["image"])))
        return out


def run_analysis(
    space_file: str | Path,
    request: AnalysisRequest = AnalysisRequest(),
    *,
    out_dir: str | Path | None = None,
    export: str | Path | None = None,
    runs_dir: str | Path = "runs",
    tracking_uri: str | None = None,
) -> AnalysisOutcome:
    """The `analyze` command: analyse the space's model as `request` says (`analyze`), derive
    a policy from it (`derive_policy`) and write analysis.json, the plots and the derived
    policy file to `out_dir` (default `<runs_dir>/analysis-<space>`; the policy file to
    `export` if given); with `tracking_uri`, log them as one MLflow run (`log_analysis`)."""
    r = request
    space = load_space(space_file)
    if r.threads:
        space = space.model_copy(update={"training": space.training.model_copy(update={"threads": r.threads})})
    pol = load_policy(r.policy, num_layers=space.model.num_layers) if r.policy else None
    if r.checkpoint is not None and not Path(r.checkpoint).exists():
        raise ConfigError(COMMAND_LINE, "--checkpoint", str(r.checkpoint), "no such file or folder")
    if pol is not None and r.checkpoint is not None:
        raise ConfigError("command line", "--policy/--checkpoint", None, "give at most one of --policy or --checkpoint")
    if r.rows not in ("all", "targets"):
        raise ConfigError("command line", "--rows", r.rows, "must be 'all' (Eq. 2) or 'targets'")
    if not 0.0 <= r.floor <= 1.0:
        raise ConfigError("command line", "--floor", r.floor, "must be a keep ratio in [0, 1]")
    report = analyze(space, policy=pol, checkpoint=r.checkpoint, steps=r.steps, max_examples=r.max_examples,
                     heatmap_layer=r.heatmap_layer)  # fmt: skip
    derived = derive_policy(report, r.floor, *space_modes(space), rows=r.rows)  # type: ignore[arg-type]
    name = f"analysis-{Path(space_file).stem}"
    target = Path(out_dir) if out_dir else Path(runs_dir) / name
    files = write_outputs(report, target)
    files["policy"] = Path(export) if export else target / "policy.json"
    files["policy"].write_text(policy_file(derived, report, r.floor, r.rows).dump())
    run_id = None
    if tracking_uri:
        from searchvlm.tracking import log_analysis

        run_id = log_analysis(tracking_uri, runs_dir, name, report.alpha, list(files.values()))
    return AnalysisOutcome(report, derived, files, run_id)
