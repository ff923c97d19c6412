"""The metrics a trial reports: one `MetricInfo` row per metric, read by every consumer.

L0 module: stdlib + pydantic only (no torch). A metric is one `register_metric(MetricInfo(...))`
row in `REGISTRY`: its name, task, direction, label and number format, whether g_G may be
computed on it (`synergy.gen_metric`) and the name of its scorer. From the rows come:
`TrialResult`'s fields (`<name>`, `<name>_test_se`, `<name>_iso`, with their `Reached` marks:
`searchvlm.schema.trial_result`), the direction table `synergy.HIGHER_IS_BETTER` and the choices of
`synergy.gen_metric` (`synergy.GEN_METRICS`, `config.SynergyConfig`), the scoring of every
evaluation round (`searchvlm.train.training`, where `@scorer(name)` implements it in torch), the
per-seed records and their means (`searchvlm.train.trial`), the `trial` command's table
(`_console.result_table`) and the Table 3 columns (`reproduce.COLUMNS`). A test checks the
scorers and the rows name the same metrics; `tests/test_metric_registry.py` adds one from a
test file.

Two orders: registration order is the file-format order (`TrialResult`'s fields, trials.csv,
Table 3); `listed()` is the display order (metrics scored at every round first, then those
scored on the final model only), the order of the `trial` table and of `gen_metric`'s choices.
Metrics registered after `searchvlm.schema.trial_result` is imported are not trials.csv columns:
their means ride on `TrialResult` as extra keys (`trial_result.late_fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from searchvlm.schema._strict import OneOf

Task = Literal["understanding", "generation"]

__all__ = [
    "REGISTRY",
    "UND_METRIC",
    "GenMetric",
    "MetricInfo",
    "gen_metric_choices",
    "gen_metric_doc",
    "higher_is_better",
    "listed",
    "metric_info",
    "register_metric",
]


@dataclass(frozen=True)
class MetricInfo:
    """What one metric is: everything outside its torch scorer reads this."""

    name: str  # the TrialResult field and per-seed key; `<name>_iso`: the isolated baseline's value
    task: Task  # the task it scores: joint runs against that task's isolated baseline
    higher_is_better: bool  # its direction (the best checkpoint, the sign of a gain on it)
    doc: str  # the TrialResult field's description
    label: str  # its row in the `trial` command's table
    scorer: str | None  # its `@scorer` in searchvlm.train.training (every round); None: the trial scores it on
    #                     the final model by sampling (`synergy.fidelity`)
    fmt: str = ".4f"  # number format in the `trial` table
    choice: str | None = None  # its name as `synergy.gen_metric` (g_G may be computed on it; generation only)
    choice_doc: str = ""  # what that choice means (the config's description)
    table3: str | None = None  # its column header in reproduce's Table 3 (None: not a column)
    per_round: bool = False  # also reported after every evaluation round (validation; MO-ASHA, MLflow)
    test_se: bool = False  # its test set's standard error kept (`<name>_test_se`, per seed `<name>_iso_test_se`)
    steps: str | None = None  # per-seed key of its scored steps (`<steps>_joint`, `<steps>_iso`); None: `<name>_step`

    @property
    def iso(self) -> str:
        """The isolated baseline's field."""
        return f"{self.name}_iso"

    @property
    def step_key(self) -> str:
        return self.steps or f"{self.name}_step"

    @property
    def iso_doc(self) -> str:
        return f"the isolated {self.task} baseline's {self.name}"


#: every metric, by name (registration order: TrialResult's fields, trials.csv and Table 3)
REGISTRY: dict[str, MetricInfo] = {}
#: the metric g_U is computed on
UND_METRIC = "und_acc"


def register_metric(info: MetricInfo) -> MetricInfo:
    """Make a metric known to scoring, results, synergy and tables (its torch side: `training.scorer`)."""
    if REGISTRY.get(info.name, info) != info:
        raise ValueError(f"metric {info.name!r} is already registered")
    if info.choice is not None:
        if info.task != "generation":
            raise ValueError(f"metric {info.name!r}: only a generation metric can be synergy.gen_metric")
        taken = gen_metric_choices().get(info.choice, info.name)
        if taken != info.name:
            raise ValueError(f"synergy.gen_metric {info.choice!r} is already {taken!r}")
    REGISTRY[info.name] = info
    return info


def metric_info(name: str) -> MetricInfo:
    return REGISTRY[name]


def listed() -> list[MetricInfo]:
    """The metrics in display order: those scored every round, then those scored on the final model."""
    return sorted(REGISTRY.values(), key=lambda m: m.scorer is None)


def gen_metric_choices() -> dict[str, str]:
    """`synergy.gen_metric` -> the metric g_G is computed on, in display order."""
    return {m.choice: m.name for m in listed() if m.choice is not None}


def gen_metric_doc() -> str:
    """The description of `synergy.gen_metric`: each choice and what it means."""
    choices = " | ".join(f"{m.choice} ({m.choice_doc})" for m in listed() if m.choice is not None)
    return f"what g_G is computed on: {choices}. All are reported whichever is chosen"


def higher_is_better(name: str) -> bool:
    return REGISTRY[name].higher_is_better


class LiveMap(Mapping):
    """A read-only mapping computed from the registry at every look-up (metrics registered
    later are in it)."""

    def __init__(self, build: Callable[[], dict]):
        self._build = build

    def __getitem__(self, key):
        return self._build()[key]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


#: a `synergy.gen_metric` value (validated against the registered choices, reported as a Literal of them)
GenMetric = Annotated[str, OneOf(gen_metric_choices)]


# --------------------------------------------------------------------------- the metrics

register_metric(
    MetricInfo(
        "und_acc",
        "understanding",
        True,
        "joint model's understanding test accuracy (exact answer match) at its scored checkpoint",
        "understanding accuracy",
        scorer="und_acc",
        table3="U: accuracy",
        per_round=True,
        test_se=True,
        steps="und_step",
    )
)
register_metric(
    MetricInfo(
        "gen_nll",
        "generation",
        False,
        "joint model's generation test NLL, nats per image token, at its scored checkpoint",
        "generation NLL (nats/token)",
        scorer="gen_nll",
        choice="nll",
        choice_doc="held-out image-token NLL, lower better",
        table3="G: NLL ↓",
        per_round=True,
        test_se=True,
        steps="gen_step",
    )
)
register_metric(
    MetricInfo(
        "gen_fidelity",
        "generation",
        True,
        "share of sampled test images (final joint model) that classifiers trained on real "
        "images assign to the prompted attributes (synergy.fidelity: true; else None)",
        "generation fidelity",
        scorer=None,
        choice="fidelity",
        choice_doc="sampled images judged by real-image classifiers, final model; needs synergy.fidelity: true",
        table3="G: fidelity",
    )
)
register_metric(
    MetricInfo(
        "gen_caption_acc",
        "generation",
        True,
        "joint model's generative caption accuracy on test: share of images to which their true "
        "caption gives a lower NLL than every caption that differs in one attribute (None: no swaps)",
        "generation caption accuracy",
        scorer="gen_caption_acc",
        choice="caption_acc",
        choice_doc="generative classification: the true caption gives the image a lower NLL than every "
        "one-attribute swap; higher better",
        table3="G: caption acc.",
    )
)
register_metric(
    MetricInfo(
        "gen_caption_nats",
        "generation",
        True,
        "joint model's mean image-token NLL under a one-attribute-swapped caption minus under the "
        "true one, nats per image token, on test (how much the caption tells the image)",
        "caption margin (nats/token)",
        scorer="gen_caption_nats",
    )
)
