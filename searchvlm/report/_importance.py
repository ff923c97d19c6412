"""The parameter-importance figures: `ImportanceInfo` per objective of a sweep's Optuna study
(PED-ANOVA), each drawn as a PNG bar chart. optuna is imported only here, inside functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.report._canvas import new_axes, save, slug
from searchvlm.schema.errors import warn_damaged
from searchvlm.schema.results import STUDY_FILE, SWEEP_FILE, TRIALS_FILE, read_meta, store_problem

#: fewest COMPLETE Optuna trials for a PED-ANOVA importance chart
MIN_IMPORTANCE_TRIALS = 10

__all__ = ["MIN_IMPORTANCE_TRIALS", "ImportanceInfo", "importance_infos", "importance_plots",
           "importance_png"]  # fmt: skip


@dataclass(frozen=True)
class ImportanceInfo:
    """One objective's chart: its file key (`importance_<metric>`), title and the parameters
    with their importance, least important first (the bottom bar of a horizontal chart)."""

    key: str
    title: str
    items: list[tuple[str, float]]


def _load_study(db: Path, study_name: str) -> tuple[Any, str | None]:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    storage = f"sqlite:///{db}"
    try:
        return optuna.load_study(study_name=study_name, storage=storage), None
    except SQLAlchemyError as err:  # damaged past its table list
        return None, f"{db}: not a readable Optuna study ({str(err).splitlines()[0]}); parameter importance skipped"
    except KeyError:
        names = optuna.get_all_study_names(storage)
        return (
            None,
            f"no study {study_name!r} in {db} (studies: {names}); parameter importance skipped",
        )


def _metric_names(study: Any, run_dir: Path) -> list[str]:
    """The study's metric names; for a study made before sweeps named them, the objectives
    recorded in `sweep.json`; `objective_<i>` only when neither says."""
    if study.metric_names:
        return list(study.metric_names)
    meta = read_meta(run_dir / SWEEP_FILE) if (run_dir / SWEEP_FILE).exists() else None
    recorded = [o.get("name", "") for o in meta.objectives] if meta else []
    if len(recorded) == len(study.directions) and all(recorded):
        return recorded
    return [f"objective_{i}" for i in range(len(study.directions))]


def importance_infos(run_dir: str | Path, study_name: str) -> tuple[list[ImportanceInfo], str | None]:
    """PED-ANOVA importance per objective of `runs/<sweep>/optuna.db`: `(infos, None)`, or
    `([], reason)` when the study is missing or has fewer than MIN_IMPORTANCE_TRIALS complete
    trials. The target quantile is `clip(5 / n, 0.1, 0.5)` so at least ~5 trials form the
    "good" set (Optuna's advice)."""
    db = Path(run_dir) / STUDY_FILE
    if not db.exists():
        return [], f"no Optuna study at {db}; parameter importance skipped"
    problem = store_problem(db, "studies")
    if problem is not None:  # the front needs only trials.csv: say so and go on
        warn_damaged(db, "", f"{problem}; parameter importance skipped (the front is read from {TRIALS_FILE})")
        return [], None
    study, reason = _load_study(db, study_name)
    if study is None:
        return [], reason
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_IMPORTANCE_TRIALS:
        return [], (f"study {study_name!r} has {n} complete trials (< {MIN_IMPORTANCE_TRIALS}); importance skipped")
    names = _metric_names(study, Path(run_dir))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 5 / n)))
    out: list[ImportanceInfo] = []
    for i, (metric, direction) in enumerate(zip(names, study.directions)):
        sign = 1.0 if direction == StudyDirection.MINIMIZE else -1.0
        with warnings.catch_warnings():  # Optuna warns that `target` is minimised: ours is signed
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            imp = get_param_importances(study, evaluator=evaluator, target=lambda t, i=i, s=sign: s * t.values[i])
        if imp:
            title = f"{study_name}: what reaches the best {metric} ({direction.name.lower()}, n={n})"
            out.append(ImportanceInfo(f"importance_{slug(metric)}", title, sorted(imp.items(), key=lambda kv: kv[1])))
    return out, None if out else f"study {study_name!r} has no parameters to rank"


def importance_png(info: ImportanceInfo, path: Path) -> Path:
    """One objective's importance as horizontal bars."""
    fig, ax = new_axes((7.0, 0.8 + 0.3 * max(1, len(info.items))))
    ax.barh([k for k, _ in info.items], [v for _, v in info.items], color="C0")
    ax.set_xlabel("PED-ANOVA importance (normalised)")
    ax.set_title(info.title, fontsize=10)
    return save(fig, path)


def importance_plots(run_dir: str | Path, out_dir: str | Path, study_name: str) -> tuple[dict[str, Path], str | None]:
    """PED-ANOVA importance per objective of `runs/<sweep>/optuna.db` as PNG bar charts.

    Returns `({"importance_<metric>": path}, None)`, or `({}, reason)` when the study is
    missing or has fewer than MIN_IMPORTANCE_TRIALS complete trials (`importance_infos`).
    """
    infos, reason = importance_infos(run_dir, study_name)
    return {i.key: importance_png(i, Path(out_dir) / f"{i.key}.png") for i in infos}, reason
