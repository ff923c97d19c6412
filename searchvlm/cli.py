"""The `searchvlm` command line: thin typer commands over the public API (L5).

Bad input exits with code 2 and one line per problem naming the file, key and value: the
command group (`searchvlm._help.HelpGroup`, a `searchvlm._usage.PlainErrorsGroup`) prints every command's `ConfigError`,
so no command catches one itself.
Tables stay whole off a terminal (pipes, CI, nohup): see `searchvlm._console`.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from searchvlm import __version__
from searchvlm._cli_base import (
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
from searchvlm._cli_runs import compare, rm, runs_
from searchvlm._console import (
    alpha_table,
    confirm_table,
    gradients_tables,
    presets_table,
    print_pareto,
    print_table,
    result_table,
)
from searchvlm._help import HelpGroup
from searchvlm._usage import print_error
from searchvlm.errors import COMMAND_LINE, ConfigError
from searchvlm.search import EXPORT_RULES

app = typer.Typer(
    help="Search synergy-aware image-token reduction policies for unified VLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=HelpGroup,  # usage errors as one `error:` line too; value shapes as metavars
)
#: `export --rule` choices, from `searchvlm.search.EXPORT_RULES` (L0: no numpy at start)
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


@app.command()
def trial(
    space_file: Path = typer.Argument(..., help="search space YAML (its fixed sections define the trial)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="a named policy (see `searchvlm presets`)"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="an exported or explicit policy JSON"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds (default: the space's)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="baseline cache (default runs/cache)"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
) -> None:
    """Train one policy jointly and against its isolated baselines; print the result.

    Example: searchvlm trial search_spaces/quick.yaml --preset himix_hmgen --seeds 0,1"""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from searchvlm.space import load_trial_config

    config = load_trial_config(space_file, preset=preset, policy=policy, seeds=seeds_option(seeds), cache_dir=cache_dir,
                               overrides=sets)  # fmt: skip
    if not print_config:
        _check_data(config.data)
    if print_config:
        exit_with_config(config)
    from searchvlm.trial import run_trial

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        result = run_trial(config, progress=progress)
    if as_json:
        out.print_json(result.model_dump_json())
    else:
        print_table(out, result_table(result, config.synergy.gen_metric))
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
    from searchvlm.presets import clipping, compile_presets

    compiled = compile_presets(layers)
    if as_json:
        print_json({name: p.model_dump(mode="json") for name, p in compiled.items()})
        return
    print_table(out, presets_table(compiled, layers))
    for name in compiled:
        if note := clipping(name, layers):
            out.print(f"{name} on {layers} layers: {note}", highlight=False)


@app.command()
def sweep(
    space_file: Path = typer.Argument(..., help="search space YAML"),
    name: Optional[str] = typer.Option(None, "--name", help="sweep name (default: the file's stem)"),
    samples: Optional[int] = typer.Option(
        None, "--samples", min=1, help="trials to run (default: the space's; fixed on --resume)"
    ),
    concurrency: Optional[str] = typer.Option(
        None, "--concurrency", help="trials at once, or auto: as many as the Ray cluster fits (fixed on --resume)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep of this name (same space file)"),
    address: Optional[str] = typer.Option(
        None, "--address", help="existing Ray cluster (or RAY_ADDRESS; run on one of its nodes: ray:// is refused)"
    ),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default sqlite under runs/)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="baseline cache (default runs/cache; a resumed sweep: the one it used)"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no live view (nor event lines)"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP + " (a resumed sweep needs the same)"),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP),
) -> None:
    """Run a policy sweep: Ray Tune trials, an Optuna study, MLflow tracking.

    On a terminal a live view shows the front, elapsed time and ETA; elsewhere (a pipe, CI,
    nohup) one plain line per trial event. `--resume --samples N` extends a finished sweep.

    Example: searchvlm sweep search_spaces/quick.yaml --name quick"""
    from searchvlm.space import load_space

    space = load_space(space_file, sets)  # fail fast, before Ray and the sweep package load
    concurrency = concurrency_option(concurrency)
    if print_config:
        exit_with_config(space.with_search(samples=samples, concurrency=concurrency))
    from searchvlm.sweep import SweepOptions, run_sweep

    options = SweepOptions(samples=samples, concurrency=concurrency, overrides=sets, address=address,
                           tracking_uri=tracking_uri, cache_dir=cache_dir)  # fmt: skip
    summary = run_sweep(space_file, name=name, runs_dir=runs_dir, resume=resume, progress=not no_progress,
                        options=options)  # fmt: skip
    out.print(f"next: searchvlm pareto {summary.name} --runs-dir {runs_dir}")


@app.command()
def validate(
    files: list[Path] = typer.Argument(..., help="search space YAML and/or policy JSON files"),
    as_json: bool = typer.Option(False, "--json", help="print every file's result and problems as JSON"),
) -> None:
    """Check search space and policy files; report every problem of each (exit 2 if any).

    Example: searchvlm validate search_spaces/quick.yaml policy.json"""
    from searchvlm.file_checks import validate_files

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
    from searchvlm.file_checks import FileCheck
    from searchvlm.space import load_space

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
    from searchvlm.schema_doc import space_json_schema, space_reference

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


@app.command()
def export(
    run: str = typer.Argument(..., help="sweep name (under --runs-dir) or sweep directory"),
    rule: Optional[RuleName] = typer.Option(
        None,
        "--rule",
        help="how to pick the trial: knee, max-synergy, min-flops on the front, or decision (the "
        "policy `decide` accepted); default knee",
        show_default=False,
    ),
    trial: Optional[str] = typer.Option(
        None, "--trial", help="export this trial instead: its id (trials.csv), number, #N or tNNNN"
    ),
    max_flops: Optional[float] = typer.Option(None, "--max-flops", help="only trials with flops_ratio <= X"),
    min_synergy: Optional[float] = typer.Option(None, "--min-synergy", help="only trials with synergy_gain >= Y"),
    output: Path = typer.Option(Path("policy.json"), "-o", "--output", help="policy file to write"),
    force: bool = typer.Option(False, "--force", help="overwrite the --output file if it exists"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
) -> None:
    """Export a trial's policy (validated JSON; load with `load_policy`): the one --rule picks, or --trial.

    Its picture (keep ratio per layer and task) is written beside it: policy.json -> policy.png.

    Example: searchvlm export quick --rule knee -o policy.json"""
    from searchvlm.export import TrialChoice
    from searchvlm.report import export_report

    if trial is not None and rule is not None:
        raise ConfigError(COMMAND_LINE, "--trial", trial, "names the trial itself: give it without --rule")
    try:
        choice = TrialChoice((rule or RuleName.knee).value, max_flops, min_synergy, trial)
        done = export_report(run, choice, output, runs_dir, force=force)
    except OSError as err:  # a bad target (under a file, a directory, read-only): nothing written
        reason = f"cannot write the policy file ({err.strerror or err})"
        raise ConfigError(COMMAND_LINE, "--output", str(output), reason) from None
    prov = done.provenance
    numbers = (f"confirmed numbers, seeds {prov['confirmed_seeds']}" if prov.get("numbers") == "confirmed"
               else "search numbers")  # fmt: skip
    out.print(f"wrote {done.path} (trial {prov['trial_id']}, number {prov['trial_number']}, "
              f"{'chosen' if trial else prov['rule']}, {numbers})", highlight=False)  # fmt: skip
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
    from searchvlm.confirm import run_confirm

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


@app.command()
def decide(
    run: str = typer.Argument(..., help="sweep name (under --runs-dir) or sweep directory"),
    delta: Optional[float] = typer.Option(
        None,
        "--delta",
        help="non-inferiority margin on synergy (default: the space's decision.delta)",
        show_default=False,
    ),
    alpha: Optional[float] = typer.Option(
        None, "--alpha", help="family-wise error rate (default 0.05)", show_default=False
    ),
    max_seeds: Optional[int] = typer.Option(
        None, "--max-seeds", help="most fresh seeds per candidate (default 10)", show_default=False
    ),
    first_seeds: Optional[int] = typer.Option(
        None, "--first-seeds", help="seeds of a candidate's first look (default 5)", show_default=False
    ),
    shortlist: Optional[int] = typer.Option(
        None,
        "--shortlist",
        help="candidates raced, the cheapest of the front and near-front (default 3)",
        show_default=False,
    ),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="the race's fresh seeds (default: after the sweep's)"),
    jobs: int = typer.Option(1, "--jobs", help="seeds trained at once (processes)"),
    as_json: bool = typer.Option(False, "--json", help="print decision.json instead of the verdict line"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where sweeps live"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default: the sweep's)"),
) -> None:
    """The cheapest policy whose synergy is non-inferior to dense's: a race on fresh seeds (rerun to resume).

    Example: searchvlm decide default --delta 0.035"""
    from searchvlm.decide import DecideOptions
    from searchvlm.decide import decide as run_decide

    options = DecideOptions(delta, alpha, max_seeds, first_seeds, shortlist, seeds_option(seeds), jobs)
    note = lambda text: console.print(f"  {text}", highlight=False)  # noqa: E731
    done = run_decide(run, options, runs_dir, tracking_uri, on_event=note)
    if as_json:
        print_json(done.as_dict())
        return
    out.print(f"{done.trained} runs trained, {done.reused} reused; wrote {done.path}", highlight=False)
    out.print(done.line(), highlight=False)


app.command("runs")(runs_)
LS_HELP = "Alias of `runs`: list every sweep under the runs folder.\n\nExample: searchvlm ls --json"
app.command("ls", help=LS_HELP)(runs_)
app.command()(compare)
app.command()(rm)


@app.command()
def reproduce(
    space_file: Path = typer.Argument(..., help="search space YAML (its fixed sections define the proxy)"),
    presets_: Optional[str] = typer.Option(None, "--presets", help="comma-separated subset of presets"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default runs/reproduce-<space>)"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds (default: the space's)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where outputs and the MLflow store live"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default sqlite under runs/)"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    print_config: bool = typer.Option(False, "--print-config", help=PRINT_CONFIG_HELP + " (the dense row's)"),
) -> None:
    """The literature presets side by side: the study's Table 3 on our proxy.

    Example: searchvlm reproduce search_spaces/default.yaml --seeds 0,1,2 --presets dense,himix"""
    from searchvlm.reproduce import ReproduceRequest, reproduce_config, run_reproduce

    wanted = presets_.split(",") if presets_ is not None else None  # "" is refused, not the default
    done = lambda name, r: console.print(f"  {name}: {r.status} synergy {r.synergy_gain} flops {r.flops_ratio}")  # noqa: E731
    request = ReproduceRequest(presets=wanted, seeds=seeds_option(seeds), overrides=sets)
    if print_config:
        exit_with_config(reproduce_config(space_file, request, runs_dir))
    step = lambda phase, k, n: console.print(f"  {phase}: {k}/{n} steps", highlight=False)  # noqa: E731
    table = run_reproduce(space_file, request, out_dir=out_dir, runs_dir=runs_dir, tracking_uri=tracking_uri,
                          on_result=done, progress=step)  # fmt: skip
    out.print(table.markdown())
    out.print(f"wrote {table.files['md']} and {table.files['csv']}")


@app.command()
def analyze(
    space_file: Path = typer.Argument(..., help="search space YAML (its fixed sections define the model)"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="train under this policy JSON (default: dense)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="analyse a model saved by a trial instead"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default runs/analysis-<space>)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="training steps (default: the space's)"),
    examples: int = typer.Option(256, "--examples", min=1, help="held-out examples per task"),
    layer: Optional[int] = typer.Option(
        None, "--heatmap-layer", min=0, help="0-based layer of the heatmap (default L//2)"
    ),
    floor: float = typer.Option(0.25, "--floor", help="lowest keep ratio of the derived policy"),
    rows: str = typer.Option("all", "--rows", help="derive from all query rows (Eq. 2) or the task's targets"),
    export: Optional[Path] = typer.Option(None, "--export", help="write the derived policy file here"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="log to this MLflow URI"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads (default: training.threads)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where outputs (and the MLflow artifacts) go"),
) -> None:
    """Layerwise attention allocation per task and segment (the study's Eq. 2), plots, derived policy.

    Example: searchvlm analyze search_spaces/default.yaml --threads 1 --export derived.json"""
    from searchvlm.analysis_run import AnalysisRequest, run_analysis

    request = AnalysisRequest(policy=policy, checkpoint=checkpoint, steps=steps, max_examples=examples,
                              heatmap_layer=layer, floor=floor, rows=rows, threads=threads)  # fmt: skip
    try:
        done = run_analysis(space_file, request, out_dir=out_dir, export=export, runs_dir=runs_dir,
                            tracking_uri=tracking_uri)  # fmt: skip
    except ValueError as err:  # a plain ValueError of the analysis, too, is one `error:` line
        fail(err)
    print_table(out, alpha_table(done))
    for task in ("understanding", "generation"):
        tp = done.derived.task(task)
        out.print(f"derived {task} keep ({tp.mode}): " + " ".join(f"{k:.2f}" for k in tp.keep))
    out.print(f"wrote {', '.join(str(p) for p in done.files.values())}")
    if done.run_id:
        out.print(f"mlflow: {tracking_uri} (run {done.run_id})")


@app.command()
def diagnose(
    space_file: Path = typer.Argument(..., help="search space YAML (its fixed sections define the model and training)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="a named policy (see `searchvlm presets`)"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="an exported or explicit policy JSON"),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=0, help="training steps (default: the space's; fewer is cheaper; 0: initialisation only)"
    ),
    batches: int = typer.Option(4, "--batches", min=1, help="fixed training batches per task to average over"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="model and batch seed (default: the space's first)"),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="output folder (default runs/diagnose-<space>-<policy>)"
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads (default: training.threads)"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where outputs go"),
    sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Per layer and parameter group, the cosine between the two tasks' gradients and each task's
    share of the gradient, at initialisation and at the joint run's best validation rounds.

    Example: searchvlm diagnose search_spaces/default.yaml --preset himix_hmgen --steps 150"""
    from searchvlm.diagnose import DiagnoseRequest, run_diagnose

    request = DiagnoseRequest(preset=preset, policy=policy, seed=seed, steps=steps, batches=batches, threads=threads,
                              overrides=sets)  # fmt: skip
    try:
        done = run_diagnose(space_file, request, out_dir=out_dir, runs_dir=runs_dir)
    except ValueError as err:  # a plain ValueError (a layout the policy cannot serve) is one `error:` line too
        fail(err)
    for table in gradients_tables(done.report):
        print_table(out, table)
    out.print(f"wrote {', '.join(str(p) for p in done.files.values())} ({done.report.seconds['total']:.0f} s)")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
