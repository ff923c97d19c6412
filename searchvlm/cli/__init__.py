"""The `searchvlm` command line: thin typer commands over the public API (L5).

Bad input exits with code 2 and one line per problem naming the file, key and value: the
command group (`searchvlm.cli._help.HelpGroup`, a `searchvlm.cli._usage.PlainErrorsGroup`)
prints every command's `ConfigError`, so no command catches one itself.
Tables stay whole off a terminal (pipes, CI, nohup): see `searchvlm.report._console`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from searchvlm import __version__
from searchvlm.cli._base import (
    PRINT_CONFIG_HELP,
    SET_HELP,
    concurrency_option,
    console,
    exit_with_config,
    fail,
    out,
    print_json,
    ref_option,
    seeds_option,
)
from searchvlm.cli._help import HelpGroup
from searchvlm.cli._request import argument, option, record_command, request
from searchvlm.cli._runs import compare, rm, runs_
from searchvlm.cli._usage import print_error
from searchvlm.report._console import (
    alpha_table,
    confirm_table,
    gradients_tables,
    presets_table,
    print_pareto,
    print_table,
    result_table,
)
from searchvlm.schema.errors import COMMAND_LINE, ConfigError
from searchvlm.schema.search import EXPORT_RULES

__all__ = ["app", "main"]

app = typer.Typer(
    help="Search synergy-aware image-token reduction policies for unified VLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=HelpGroup,  # usage errors as one `error:` line too; value shapes as metavars
)
#: `export --rule` choices, from `searchvlm.schema.search.EXPORT_RULES` (L0: no numpy at start)
RuleName = Enum("RuleName", {rule.replace("-", "_"): rule for rule in EXPORT_RULES}, type=str)


def _version(value: bool) -> None:
    if value:
        out.print(f"searchvlm {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),  # fmt: skip
) -> None:
    """Search synergy-aware image-token reduction policies for unified VLMs."""


@dataclass(frozen=True)
class TrialArgs:
    space_file: Path = argument(help="search space YAML (its fixed sections define the trial)")
    preset: Optional[str] = option(None, "--preset", help="a named policy (see `searchvlm presets`)")
    policy: Optional[Path] = option(None, "--policy", help="an exported or explicit policy JSON")
    as_json: bool = option(False, "--json", help="print the result as JSON")
    seeds: Optional[list[int]] = option(
        None, "--seeds", parse=seeds_option, help="comma-separated seeds (default: the space's)"
    )
    cache_dir: Optional[Path] = option(None, "--cache-dir", help="baseline cache (default runs/cache)")
    overrides: Optional[list[str]] = option(None, "--set", help=SET_HELP)
    print_config: bool = option(False, "--print-config", help=PRINT_CONFIG_HELP)


@app.command()
@record_command
def trial(args: TrialArgs) -> None:
    """Train one policy jointly and against its isolated baselines; print the result.

    Example: searchvlm trial search_spaces/quick.yaml --preset himix_hmgen --seeds 0,1"""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from searchvlm.schema.space import load_trial_config

    config = load_trial_config(args.space_file, preset=args.preset, policy=args.policy, seeds=args.seeds,
                               cache_dir=args.cache_dir, overrides=args.overrides)  # fmt: skip
    if not args.print_config:
        _check_data(config.data)
    if args.print_config:
        exit_with_config(config)
    from searchvlm.train.trial import run_trial

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        disable=args.as_json,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = run_trial(config, progress=progress)
    if args.as_json:
        out.print_json(result.model_dump_json())
    else:
        last = config.training.steps if config.synergy.at == "best" else None  # `final` scores the last round
        print_table(out, result_table(result, config.synergy.gen_metric, last))
        if result.error:
            console.print(f"[red]failed:[/red] {result.error}")
    raise typer.Exit(0 if result.status == "ok" else 1)


@app.command()
def presets(
    layers: int = typer.Option(8, help="model depth the presets are compiled for"),
    as_json: bool = typer.Option(False, "--json", help="print the compiled presets as JSON"),
) -> None:
    """List the named literature policies with their per-layer keep ratios and sharing, and
    the presets whose paper depth parameters are clipped at this depth.

    Example: searchvlm presets --layers 12"""
    from searchvlm.schema.policy.presets import clipping, compile_presets

    compiled = compile_presets(layers)
    if as_json:
        print_json({name: p.model_dump(mode="json") for name, p in compiled.items()})
        return
    print_table(out, presets_table(compiled, layers))
    for name in compiled:
        if note := clipping(name, layers):
            out.print(f"{name} on {layers} layers: {note}", highlight=False)


@dataclass(frozen=True)
class SweepArgs:
    space_file: Path = argument(help="search space YAML")
    name: Optional[str] = option(None, "--name", help="sweep name (default: the file's stem)")
    samples: Optional[int] = option(
        None, "--samples", min=1, help="trials to run (default: the space's; fixed on --resume)"
    )
    concurrency: Optional[str] = option(
        None, "--concurrency", help="trials at once, or auto: as many as the Ray cluster fits (fixed on --resume)"
    )
    resume: bool = option(False, "--resume", help="continue an interrupted sweep of this name (same space file)")
    address: Optional[str] = option(
        None, "--address", help="existing Ray cluster (or RAY_ADDRESS; run on one of its nodes: ray:// is refused)"
    )
    tracking_uri: Optional[str] = option(None, "--tracking-uri", help="MLflow URI (default sqlite under runs/)")
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where sweeps live")
    cache_dir: Optional[Path] = option(
        None, "--cache-dir", help="baseline cache (default runs/cache; a resumed sweep: the one it used)"
    )
    storage: Optional[str] = option(
        None,
        "--storage",
        help="where Tune keeps its state: a shared folder, file://PATH or s3://BUCKET/PREFIX "
        "(AWS_ENDPOINT_URL for an S3-compatible server; default runs/<sweep>/ray; a resumed sweep: the one it used)",
    )
    no_progress: bool = option(False, "--no-progress", help="no live view (nor event lines)")
    overrides: Optional[list[str]] = option(None, "--set", help=SET_HELP + " (a resumed sweep needs the same)")
    print_config: bool = option(False, "--print-config", help=PRINT_CONFIG_HELP)


@app.command()
@record_command
def sweep(args: SweepArgs) -> None:
    """Run a policy sweep: Ray Tune trials, an Optuna study, MLflow tracking.

    On a terminal a live view shows the front, elapsed time and ETA; elsewhere (a pipe, CI,
    nohup) one plain line per trial event. `--resume --samples N` extends a finished sweep.

    Example: searchvlm sweep search_spaces/quick.yaml --name quick"""
    from searchvlm.schema.space import load_space

    space = load_space(args.space_file, args.overrides)  # fail fast, before Ray and the sweep package load
    concurrency = concurrency_option(args.concurrency)
    if args.print_config:
        exit_with_config(space.with_search(samples=args.samples, concurrency=concurrency))
    from searchvlm.schema._storage_uri import check_storage

    storage = None if args.storage is None else check_storage(args.storage)  # before the sweep package loads
    from searchvlm.sweep import SweepOptions, run_sweep

    options = request(SweepOptions, args, concurrency=concurrency, storage=storage)
    summary = run_sweep(args.space_file, name=args.name, runs_dir=args.runs_dir, resume=args.resume,
                        progress=not args.no_progress, options=options)  # fmt: skip
    out.print(f"next: searchvlm pareto {summary.name} --runs-dir {args.runs_dir}")


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., help="search space YAML and/or policy JSON files"),
    as_json: bool = typer.Option(False, "--json", help="print every file's result and problems as JSON"),
) -> None:
    """Check search space and policy files; report every problem of each (exit 2 if any).

    Example: searchvlm validate search_spaces/quick.yaml policy.json"""
    from searchvlm.schema.file_checks import validate_files

    checks = [_with_data(c) for c in validate_files(files)]
    if as_json:
        print_json([c.to_dict() for c in checks])
    for c in checks if not as_json else ():
        if c.ok:
            out.print(c.summary, highlight=False, soft_wrap=True)
        else:
            print_error(str(c.error), console)
    if not all(c.ok for c in checks):
        raise typer.Exit(2)


def _check_data(cfg) -> None:
    """The data file a trial or sweep will read (`searchvlm.data.check_data`)."""
    from searchvlm.data import check_data

    check_data(cfg)


def _with_data(check):
    """A valid space file's check, with its data file checked too (`validate`)."""
    from searchvlm.schema.file_checks import FileCheck
    from searchvlm.schema.space import load_space

    if not check.ok or Path(check.path).suffix.lower() == ".json":
        return check
    try:
        _check_data(load_space(check.path).data)
    except ConfigError as err:
        return FileCheck(check.path, None, err)
    return check


@app.command()
def schema(
    as_json: bool = typer.Option(False, "--json", help="print the JSON schema of a search-space file instead"),
) -> None:
    """Print the search-space YAML reference: every key, its type, default, allowed values
    and description (the text of docs/space.md).

    Example: searchvlm schema --json"""
    from searchvlm.schema.doc import space_json_schema, space_reference

    if as_json:
        print_json(space_json_schema())
        return
    out.print(space_reference(), end="", highlight=False, markup=False)


@app.command()
def pareto(
    run: str = typer.Argument(..., help="sweep name (under --runs-dir) or sweep directory"),
    ref: Optional[str] = typer.Option(None, "--ref", help="hypervolume reference FLOPS,SYNERGY"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG/HTML plots"),
    force: bool = typer.Option(False, "--force", help="redraw (and re-log) the plots even if trials.csv is unchanged"),
) -> None:
    """Front table, hypervolume (reference point stated) and plots of a sweep.

    Plots are redrawn, and logged with the summary metrics to the sweep's MLflow parent
    run, only when trials.csv (or confirmed.csv, sweep.json, --ref) changed since they
    were written, or with --force.

    Example: searchvlm pareto quick --ref 1.0,-0.2"""
    from searchvlm.report import pareto_report

    report = pareto_report(run, ref_option(ref), runs_dir, plots=plots, force=force)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    print_pareto(out, report)


@dataclass(frozen=True)
class ExportArgs:
    run: str = argument(help="sweep name (under --runs-dir) or sweep directory")
    rule: Optional[RuleName] = option(
        None,
        "--rule",
        help="how to pick the trial: knee, max-synergy, min-flops on the front, or decision (the "
        "policy `decide` accepted); default knee",
        show_default=False,
    )
    trial: Optional[str] = option(
        None, "--trial", help="export this trial instead: its id (trials.csv), number, #N or tNNNN"
    )
    max_flops: Optional[float] = option(None, "--max-flops", help="only trials with flops_ratio <= X")
    min_synergy: Optional[float] = option(None, "--min-synergy", help="only trials with synergy_gain >= Y")
    output: Path = option(Path("policy.json"), "-o", "--output", help="policy file to write")
    force: bool = option(False, "--force", help="overwrite the --output file if it exists")
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where sweeps live")


@app.command()
@record_command
def export(args: ExportArgs) -> None:
    """Export a trial's policy (validated JSON; load with `load_policy`): the one --rule picks, or --trial.

    Its picture (keep ratio per layer and task) is written beside it: policy.json -> policy.png.

    Example: searchvlm export quick --rule knee -o policy.json"""
    from searchvlm.objectives.export import TrialChoice
    from searchvlm.report import export_report

    if args.trial is not None and args.rule is not None:
        raise ConfigError(COMMAND_LINE, "--trial", args.trial, "names the trial itself: give it without --rule")
    try:
        choice = TrialChoice((args.rule or RuleName.knee).value, args.max_flops, args.min_synergy, args.trial)
        done = export_report(args.run, choice, args.output, args.runs_dir, force=args.force)
    except OSError as err:  # a bad target (under a file, a directory, read-only): nothing written
        reason = f"cannot write the policy file ({err.strerror or err})"
        raise ConfigError(COMMAND_LINE, "--output", str(args.output), reason) from None
    prov = done.provenance
    numbers = (f"confirmed numbers, seeds {prov['confirmed_seeds']}" if prov.get("numbers") == "confirmed"
               else "search numbers")  # fmt: skip
    out.print(f"wrote {done.path} (trial {prov['trial_id']}, number {prov['trial_number']}, "
              f"{'chosen' if args.trial else prov['rule']}, {numbers})", highlight=False)  # fmt: skip
    out.print(f"wrote {done.picture} (keep ratios per layer and task)", highlight=False)


@app.command()
def show(
    policy_file: Path = typer.Argument(..., help="an exported policy file or a bare explicit policy JSON"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG to write (default: beside the file, .png)"),
) -> None:
    """Draw a policy: keep ratio per layer and task (heatmap), with mode, selector and sharing.

    Example: searchvlm show policy.json -o policy.png"""
    from searchvlm.report import policy_picture

    try:
        path = policy_picture(policy_file, output)
    except OSError as err:
        reason = f"cannot write the picture ({err.strerror or err})"
        raise ConfigError(COMMAND_LINE, "--output", str(output), reason) from None
    out.print(f"wrote {path}", highlight=False)


@app.command()
def confirm(
    run: str = typer.Argument(..., help="sweep name (under --runs-dir) or sweep directory"),
    seeds: Optional[str] = typer.Option(
        None, "--seeds", help="fresh comma-separated seeds (default: 3 after the sweep's)"
    ),
    top: Optional[int] = typer.Option(None, "--top", help="confirm at most this many (front first, then near-front)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: the sweep's)"),
) -> None:
    """Retrain the front and near-front on fresh seeds, paired with dense: confirmed.csv (rerun to resume).

    Example: searchvlm confirm quick --seeds 5,6,7 --top 8"""
    from searchvlm.records.confirm import run_confirm

    done = lambda r: console.print(f"  confirmed trial {r['trial_id']} (#{r['number']}): {r['status']}",  # noqa: E731
                                   highlight=False)  # fmt: skip
    summary = run_confirm(run, seeds_option(seeds), top, runs_dir, tracking_uri, on_row=done)
    print_table(out, confirm_table(summary))
    if summary.cpu_problem:  # a row whose cached references trained on another CPU type
        console.print(f"warning: {summary.cpu_problem} (cached reference runs from another machine?)",
                      highlight=False)  # fmt: skip
    shrink = [r["shrinkage"] for r in summary.rows if r.get("shrinkage") is not None]
    if shrink:
        out.print(f"shrinkage from the search estimate to the confirmed one: mean {sum(shrink) / len(shrink):+.4f} "
                  f"over {len(shrink)} policies", highlight=False)  # fmt: skip
    out.print(
        f"{len(summary.trained)} trained, {len(summary.skipped)} already confirmed; {summary.noise}", highlight=False
    )
    out.print(f"next: searchvlm pareto {run} --runs-dir {runs_dir} (pareto and export now use the confirmed numbers)",
              highlight=False)  # fmt: skip


@dataclass(frozen=True)
class DecideArgs:
    run: str = argument(help="sweep name (under --runs-dir) or sweep directory")
    delta: Optional[float] = option(
        None,
        "--delta",
        help="non-inferiority margin on synergy (default: the space's decision.delta)",
        show_default=False,
    )
    alpha: Optional[float] = option(None, "--alpha", help="family-wise error rate (default 0.05)", show_default=False)
    max_seeds: Optional[int] = option(
        None, "--max-seeds", help="most fresh seeds per candidate (default 10)", show_default=False
    )
    first_seeds: Optional[int] = option(
        None, "--first-seeds", help="seeds of a candidate's first look (default 5)", show_default=False
    )
    shortlist: Optional[int] = option(
        None,
        "--shortlist",
        help="candidates raced, the cheapest of the front and near-front (default 3)",
        show_default=False,
    )
    seeds: Optional[list[int]] = option(
        None, "--seeds", parse=seeds_option, help="the race's fresh seeds (default: after the sweep's)"
    )
    jobs: int = option(
        1, "--jobs", help="runs trained at once (processes): the seeds' reference runs, then the candidate's"
    )
    as_json: bool = option(False, "--json", help="print decision.json instead of the verdict line")
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where sweeps live")
    tracking_uri: Optional[str] = option(None, "--tracking-uri", help="MLflow URI (default: the sweep's)")


@app.command()
@record_command
def decide(args: DecideArgs) -> None:
    """The cheapest policy whose synergy is non-inferior to dense's: a race on fresh seeds (rerun to resume).

    Example: searchvlm decide default --delta 0.035"""
    from searchvlm.records.decide import DecideOptions
    from searchvlm.records.decide import decide as run_decide

    note = lambda text: console.print(f"  {text}", highlight=False)  # noqa: E731
    done = run_decide(args.run, request(DecideOptions, args), args.runs_dir, args.tracking_uri, on_event=note)
    if args.as_json:
        print_json(done.as_dict())
        return
    out.print(f"{done.trained} runs trained, {done.reused} reused; wrote {done.path}", highlight=False)
    out.print(done.line(), highlight=False)


app.command("runs")(runs_)
LS_HELP = "Alias of `runs`: list every sweep under the runs folder.\n\nExample: searchvlm ls --json"
app.command("ls", help=LS_HELP)(runs_)
app.command()(compare)
app.command()(rm)


def _names(text: Optional[str]) -> Optional[list[str]]:
    """`--presets a,b` as a list; None when not given ("" is refused later, not the default)."""
    return text.split(",") if text is not None else None


@dataclass(frozen=True)
class ReproduceArgs:
    space_file: Path = argument(help="search space YAML (its fixed sections define the proxy)")
    presets: Optional[list[str]] = option(None, "--presets", parse=_names, help="comma-separated subset of presets")
    out_dir: Optional[Path] = option(None, "--out", help="output folder (default runs/reproduce-<space>)")
    seeds: Optional[list[int]] = option(
        None, "--seeds", parse=seeds_option, help="comma-separated seeds (default: the space's)"
    )
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where outputs and the MLflow store live")
    tracking_uri: Optional[str] = option(None, "--tracking-uri", help="MLflow URI (default sqlite under runs/)")
    overrides: Optional[list[str]] = option(None, "--set", help=SET_HELP)
    print_config: bool = option(False, "--print-config", help=PRINT_CONFIG_HELP + " (the dense row's)")
    max_seeds: Optional[int] = option(
        None, "--max-seeds", show_default=False,
        help="add seeds to each row still undecided at the space's decision margin (looks: the --seeds count, "
        "doubling) until decided or at this many seeds (default: the given seeds only)",
    )  # fmt: skip


@app.command()
@record_command
def reproduce(args: ReproduceArgs) -> None:
    """The literature presets side by side: the study's Table 3 on our proxy.

    Example: searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2 --presets dense,himix"""
    from searchvlm.records.reproduce import ReproduceRequest, reproduce_config, run_reproduce

    done = lambda name, r: console.print(f"  {name}: {r.status} synergy {r.synergy_gain} flops {r.flops_ratio}")  # noqa: E731
    wanted = request(ReproduceRequest, args)
    if args.print_config:
        exit_with_config(reproduce_config(args.space_file, wanted, args.runs_dir))
    step = lambda phase, k, n: console.print(f"  {phase}: {k}/{n} steps", highlight=False)  # noqa: E731
    table = run_reproduce(args.space_file, wanted, out_dir=args.out_dir, runs_dir=args.runs_dir,
                          tracking_uri=args.tracking_uri, on_result=done, progress=step)  # fmt: skip
    out.print(table.markdown())
    if table.trained is not None:
        out.print(f"{table.trained} runs trained, {table.reused} reused (table3_race.json)", highlight=False)
    out.print(f"wrote {table.files['md']} and {table.files['csv']}")


@dataclass(frozen=True)
class AnalyzeArgs:
    space_file: Path = argument(help="search space YAML (its fixed sections define the model)")
    policy: Optional[Path] = option(None, "--policy", help="train under this policy JSON (default: dense)")
    checkpoint: Optional[Path] = option(None, "--checkpoint", help="analyse a model saved by a trial instead")
    out_dir: Optional[Path] = option(None, "--out", help="output folder (default runs/analysis-<space>)")
    steps: Optional[int] = option(None, "--steps", min=1, help="training steps (default: the space's)")
    max_examples: int = option(256, "--examples", min=1, help="held-out examples per task")
    heatmap_layer: Optional[int] = option(
        None, "--heatmap-layer", min=0, help="0-based layer of the heatmap (default L//2)"
    )
    floor: float = option(0.25, "--floor", help="lowest keep ratio of the derived policy")
    rows: str = option("all", "--rows", help="derive from all query rows (Eq. 2) or the task's targets")
    export: Optional[Path] = option(None, "--export", help="write the derived policy file here")
    tracking_uri: Optional[str] = option(None, "--tracking-uri", help="log to this MLflow URI")
    threads: Optional[int] = option(None, "--threads", min=1, help="torch threads (default: training.threads)")
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where outputs (and the MLflow artifacts) go")


@app.command()
@record_command
def analyze(args: AnalyzeArgs) -> None:
    """Layerwise attention allocation per task and segment (the study's Eq. 2), plots, derived policy.

    Example: searchvlm analyze search_spaces/default.yaml --threads 1 --export derived.json"""
    from searchvlm.records.analysis_run import AnalysisRequest, run_analysis

    try:
        done = run_analysis(args.space_file, request(AnalysisRequest, args), out_dir=args.out_dir, export=args.export,
                            runs_dir=args.runs_dir, tracking_uri=args.tracking_uri)  # fmt: skip
    except ValueError as err:  # a plain ValueError of the analysis, too, is one `error:` line
        fail(err)
    print_table(out, alpha_table(done))
    for task in ("understanding", "generation"):
        tp = done.derived.task(task)
        out.print(f"derived {task} keep ({tp.mode}): " + " ".join(f"{k:.2f}" for k in tp.keep))
    out.print(f"wrote {', '.join(str(p) for p in done.files.values())}")
    if done.run_id:
        out.print(f"mlflow: {args.tracking_uri} (run {done.run_id})")


@dataclass(frozen=True)
class DiagnoseArgs:
    space_file: Path = argument(help="search space YAML (its fixed sections define the model and training)")
    preset: Optional[str] = option(None, "--preset", help="a named policy (see `searchvlm presets`)")
    policy: Optional[Path] = option(None, "--policy", help="an exported or explicit policy JSON")
    steps: Optional[int] = option(
        None, "--steps", min=0, help="training steps (default: the space's; fewer is cheaper; 0: initialisation only)"
    )
    batches: int = option(4, "--batches", min=1, help="fixed training batches per task to average over")
    seed: Optional[int] = option(None, "--seed", min=0, help="model and batch seed (default: the space's first)")
    out_dir: Optional[Path] = option(None, "--out", help="output folder (default runs/diagnose-<space>-<policy>)")
    threads: Optional[int] = option(None, "--threads", min=1, help="torch threads (default: training.threads)")
    runs_dir: Path = option(Path("runs"), "--runs-dir", help="where outputs go")
    overrides: Optional[list[str]] = option(None, "--set", help=SET_HELP)


@app.command()
@record_command
def diagnose(args: DiagnoseArgs) -> None:
    """Per layer and parameter group, the cosine between the two tasks' gradients and each task's
    share of the gradient, at initialisation and at the joint run's best validation rounds.

    Example: searchvlm diagnose search_spaces/default.yaml --preset himix_hmgen --steps 150"""
    from searchvlm.records.diagnose import DiagnoseRequest, run_diagnose

    try:
        done = run_diagnose(args.space_file, request(DiagnoseRequest, args), out_dir=args.out_dir,
                            runs_dir=args.runs_dir)  # fmt: skip
    except ValueError as err:  # a plain ValueError (a layout the policy cannot serve) is one `error:` line too
        fail(err)
    for table in gradients_tables(done.report):
        print_table(out, table)
    out.print(f"wrote {', '.join(str(p) for p in done.files.values())} ({done.report.seconds['total']:.0f} s)")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
