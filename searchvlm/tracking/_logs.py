"""One-shot MLflow writes and reads outside a sweep's run (L4, inside `searchvlm.tracking`):
`pareto`'s report and summary on the parent run, `confirm`'s confirmed policies, the
`reproduce` table and `analyze` runs, deleting a sweep's runs (`rm`) and reading its
trials back (`runs --check`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Collection

from mlflow.entities import Metric, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from searchvlm.tracking._store import RESULT_METRICS, final_key, is_number, provenance, retry, summary_batch
from searchvlm.tracking._tracker import Tracker


def log_summary(uri: str, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Summary metrics on an existing run (the sweep's parent run, from `pareto`)."""
    batch = summary_batch(metrics, step)
    if batch:
        retry(MlflowClient(tracking_uri=uri).log_batch, run_id, metrics=batch)


def log_artifacts(uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
    """Attach files (plots, tables) to an existing run, e.g. the sweep's parent run."""
    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        retry(client.log_artifact, run_id, str(path), artifact_path)


def log_report(uri: str, runs_dir: str | Path, run_id: str, paths: list[Path], metrics: dict[str, Any],
               step: int) -> None:  # fmt: skip
    """`pareto`'s output on the sweep's parent run: the report files under `report/` and
    the summary metrics at `step`. Opening the store through a `Tracker` also relocates the
    artifact links of a moved runs folder. plotly.min.js (4.8 MB, the same for every
    report) is logged once per run, not again."""
    tracker = Tracker(uri, runs_dir)
    logged = {Path(f.path).name for f in retry(tracker.client.list_artifacts, run_id, "report")}
    todo = [p for p in paths if not (p.name == "plotly.min.js" and p.name in logged)]
    log_artifacts(uri, run_id, todo, "report")
    log_summary(uri, run_id, metrics, step)


def delete_sweep_runs(uri: str, parent_run_id: str) -> int:
    """Delete a sweep's MLflow runs: every child of `parent_run_id`, then the parent
    (MLflow's soft delete; `mlflow gc` purges them). Returns how many runs were deleted;
    0 when the store does not know the parent."""
    client = MlflowClient(tracking_uri=uri)
    try:
        parent = retry(client.get_run, parent_run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return 0
        raise
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    children = retry(client.search_runs, [parent.info.experiment_id], filter_string=flt,
                     run_view_type=ViewType.ALL, max_results=50000)  # fmt: skip
    live = [r for r in [*children, parent] if r.info.lifecycle_stage != "deleted"]
    for run in live:
        retry(client.delete_run, run.info.run_id)
    return len(live)


CONFIRM_METRICS = ("flops_ratio", "synergy_gain", "synergy_gain_stderr", "synergy_vs_dense",
                   "synergy_vs_dense_stderr", "und_gain", "gen_gain", "search_synergy_gain", "shrinkage")  # fmt: skip


def log_confirmed(uri: str, run_id: str, row: dict[str, Any]) -> None:
    """One confirmed policy (`searchvlm confirm`) on the sweep's parent run: metrics
    `confirmed.<name>` at step = the trial's number, and a `confirmed.<number>` tag naming
    the trial, its seeds and the CPU model its numbers were measured on."""
    client = MlflowClient(tracking_uri=uri)
    now, step = int(time.time() * 1000), int(row["number"])
    metrics = [Metric(f"confirmed.{k}", float(row[k]), now, step) for k in CONFIRM_METRICS if is_number(row.get(k))]
    text = f"trial {row['trial_id']} seeds {row['seeds']} status {row['status']} cpu {row.get('cpu') or 'unrecorded'}"
    tags = [RunTag(f"confirmed.{step}", text)]
    retry(client.log_batch, run_id, metrics=metrics, tags=tags)


def log_decision(uri: str, run_id: str, decision: dict[str, Any], path: Path) -> None:
    """`searchvlm decide`'s verdict on the sweep's parent run: tags `decision.verdict`,
    `decision.line` and `decision.trial_id`; metrics `decision.flops_ratio`,
    `decision.lower_bound`, `decision.seeds`, `decision.delta`; decision.json as an artifact."""
    client = MlflowClient(tracking_uri=uri)
    now, race = int(time.time() * 1000), decision.get("race") or {}
    acc = race.get("accepted") or {}
    values = {"flops_ratio": acc.get("flops_ratio"), "lower_bound": acc.get("lower"), "seeds": acc.get("seeds"),
              "delta": race.get("delta"), "alpha": race.get("alpha")}  # fmt: skip
    metrics = [Metric(f"decision.{k}", float(v), now, 0) for k, v in values.items() if is_number(v)]
    tags = [RunTag("decision.verdict", str(decision.get("verdict"))),
            RunTag("decision.line", str(decision["line"])[:5000]),
            RunTag("decision.trial_id", str(acc.get("name") or ""))]  # fmt: skip
    retry(client.log_batch, run_id, metrics=metrics, tags=tags)
    retry(client.log_artifact, run_id, str(path), "decide")


def log_table(uri: str, runs_dir: str | Path, name: str, files: list[Path], rows: list[dict]) -> str:
    """One run holding a side-by-side table (`reproduce`): files as artifacts, one metric
    per row and column (`<preset>.<column>`). Returns the run id."""
    tracker = Tracker(uri, runs_dir)
    run = retry(
        tracker.client.create_run,
        tracker.experiment_id,
        tags={MLFLOW_RUN_NAME: name, "kind": "reproduce", **provenance()},
        run_name=name,
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(f"{r['preset'] if r['preset'] != 'isolated' else r['model'].split()[0]}.{k}", float(v), now, 0)
               for r in rows for k, v in r.items() if is_number(v)]  # fmt: skip
    if metrics:
        retry(tracker.client.log_batch, run_id, metrics=metrics)
    log_artifacts(uri, run_id, files)
    retry(tracker.client.set_terminated, run_id, "FINISHED")
    return run_id


def log_analysis(uri: str, runs_dir: str | Path, name: str, alpha: dict[str, dict[str, list[float]]],
                 files: list[Path]) -> str:  # fmt: skip
    """One run holding an attention analysis (`searchvlm analyze`): metric
    `alpha.<task>.<segment>` with step = layer (0-based), the JSON and plots as artifacts."""
    tracker = Tracker(uri, runs_dir)
    client = tracker.client
    run = retry(client.create_run, tracker.experiment_id, tags={MLFLOW_RUN_NAME: name, "kind": "analysis"},
                run_name=name)  # fmt: skip
    now = int(time.time() * 1000)
    metrics = [Metric(f"alpha.{task}.{seg}", float(v), now, layer) for task, curves in alpha.items()
               for seg, vals in curves.items() for layer, v in enumerate(vals)]  # fmt: skip
    retry(client.log_batch, run.info.run_id, metrics=metrics)
    log_artifacts(uri, run.info.run_id, files)
    retry(client.set_terminated, run.info.run_id, "FINISHED")
    return run.info.run_id


def trial_records(uri: str, parent_run_id: str, policies: Collection[str] = ()) -> list[dict[str, Any]]:
    """What MLflow holds of a sweep's trials, one plain record per child run of
    `parent_run_id` (for `searchvlm runs --check`): `trial_id`, `status`, `error`, `preset`,
    `number` (the Optuna number), `duplicate_of`, `start_time`, `end_time`, the final result
    metrics by their trials.csv names, and for the trial ids in `policies` `policy_json`
    (the logged policy.json, "" when there is none)."""
    client = MlflowClient(tracking_uri=uri)
    parent = retry(client.get_run, parent_run_id, tries=2)
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    runs = retry(client.search_runs, [parent.info.experiment_id], filter_string=flt, max_results=50000, tries=2)
    records = [_trial_record(run) for run in runs if run.data.tags.get("trial_id")]
    for record, run in zip(records, [r for r in runs if r.data.tags.get("trial_id")]):
        if record["trial_id"] in policies:
            record["policy_json"] = _policy_text(client, run.info.run_id)
    return records


def _iso(ms: int | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds") if ms else ""


def _trial_record(run: Any) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    return {"trial_id": tags["trial_id"], "status": tags.get("status", ""), "error": tags.get("error"),
            "preset": tags.get("preset") or None, "number": tags.get("optuna_number", ""),
            "duplicate_of": tags.get("duplicate_of"), "start_time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time), "cpu": tags.get("cpu", ""),
            **{k: metrics[final_key(k)] for k in RESULT_METRICS if final_key(k) in metrics}}  # fmt: skip


def _policy_text(client: MlflowClient, run_id: str) -> str:
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per file on stderr
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(client.download_artifacts(run_id, "policy.json", tmp)).read_text()
        except (MlflowException, OSError):
            return ""
