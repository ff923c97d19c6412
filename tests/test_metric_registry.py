"""Metrics added in one module: `und_error` (the share of understanding answers not exactly
right, lower is better) and `gen_perplexity` (exp of an image's mean token NLL, a choice of
`synergy.gen_metric`) are declared (`searchvlm.schema.metrics.register_metric`) and scored
(`training.scorer`) here and nowhere else, and every consumer takes them: a tiny real trial
scores them at every round (joint and isolated, each at its own best round) and reports their
means on `TrialResult`, `synergy.gen_metric` accepts the generation one and computes g_G on
it, the direction table knows both, and the `trial` table shows them. The fixture removes
them again: no other test sees them. The built-in rows are checked against the tables they
replace (trials.csv's columns are pinned in test_pinned_formats.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from rich.console import Console

from searchvlm.objectives.synergy import GEN_METRICS, HIGHER_IS_BETTER, relative_gain
from searchvlm.report._console import result_table
from searchvlm.schema.config import DataConfig, ModelConfig, SynergyConfig, TrainingConfig, TrialConfig
from searchvlm.schema.metrics import REGISTRY, MetricInfo, gen_metric_choices, listed, register_metric
from searchvlm.schema.trial_result import TrialResult, late_fields
from searchvlm.train.training import METRICS, SCORERS, Evaluation, scorer, understanding_hits
from searchvlm.train.trial import run_trial

UND_ERROR = MetricInfo(
    "und_error", "understanding", False, "share of understanding answers not exactly right", "understanding error",
    scorer="und_error", fmt=".3f",
)  # fmt: skip
PERPLEXITY = MetricInfo(
    "gen_perplexity", "generation", False, "exp of each image's mean token NLL, averaged", "generation perplexity",
    scorer="gen_perplexity", choice="perplexity", choice_doc="exp(NLL) per image, lower better",
)  # fmt: skip


def _und_error(e: Evaluation) -> torch.Tensor:
    return 1.0 - understanding_hits(e.model, e.split("understanding")).float()


def _perplexity(e: Evaluation) -> torch.Tensor:
    return e.gen_nll.exp()  # shares the NLL's forward


@pytest.fixture
def added() -> Iterator[None]:
    for info, fn in ((UND_ERROR, _und_error), (PERPLEXITY, _perplexity)):
        register_metric(info)
        scorer(info.scorer)(fn)
    try:
        yield
    finally:
        for info in (UND_ERROR, PERPLEXITY):
            del REGISTRY[info.name], SCORERS[info.scorer]


def test_declarations_are_read_by_synergy_and_config(added: None) -> None:
    assert HIGHER_IS_BETTER["und_error"] is False and HIGHER_IS_BETTER["gen_perplexity"] is False
    assert GEN_METRICS["perplexity"] == "gen_perplexity" and "und_error" not in GEN_METRICS.values()
    assert SynergyConfig(gen_metric="perplexity").gen_metric == "perplexity"
    assert "perplexity" in SynergyConfig.model_json_schema()["properties"]["gen_metric"]["enum"]
    with pytest.raises(ValidationError, match="Input should be 'nll', 'caption_acc', 'perplexity' or 'fidelity'"):
        SynergyConfig(gen_metric="error")
    assert late_fields() == ("und_error", "und_error_iso", "gen_perplexity", "gen_perplexity_iso")
    with pytest.raises(ValueError, match="only a generation metric"):
        register_metric(MetricInfo("und_x", "understanding", True, "x", "x", scorer=None, choice="x"))
    with pytest.raises(ValueError, match="already 'gen_perplexity'"):
        register_metric(MetricInfo("gen_x", "generation", True, "x", "x", scorer=None, choice="perplexity"))
    with pytest.raises(ValueError, match="already registered"):
        register_metric(MetricInfo("und_error", "understanding", True, "x", "x", scorer=None))


def test_a_trial_scores_reports_and_selects_them(added: None, tmp_path: Path) -> None:
    model = ModelConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    config = TrialConfig(
        model=model,
        data=DataConfig(name="shapes", image_size=12, train_size=48, val_size=12, test_size=10),
        training=TrainingConfig(steps=6, eval_every=3, batch_size=8, threads=1),
        synergy=SynergyConfig(gen_metric="perplexity"),
        seeds=[0],
        cache_dir=str(tmp_path / "cache"),  # fresh baselines: scored on the new metrics too
    )
    result = run_trial(config)
    assert result.status == "ok", result.error
    seed = result.per_seed[0]
    # the und metric mirrors und_acc: same best rounds, joint and isolated
    assert seed.und_error == pytest.approx(1 - seed.und_acc)
    assert seed.und_error_iso == pytest.approx(1 - seed.und_acc_iso)
    assert (seed.und_error_step_joint, seed.und_error_step_iso) == (seed.und_step_joint, seed.und_step_iso)
    # g_G is computed on the chosen one, lower is better
    assert seed.gen_perplexity > 1 and seed.gen_perplexity_iso > 1
    expected = relative_gain(seed.gen_perplexity, seed.gen_perplexity_iso, higher_is_better=False)
    assert seed.gen_gain == pytest.approx(expected)
    assert result.gen_gain == pytest.approx(expected)
    # reported on the result (extra keys: not trials.csv columns) and in the `trial` table
    for key in late_fields():
        assert getattr(result, key) == pytest.approx(getattr(seed, key))
    assert TrialResult.model_validate(result.model_dump()).und_error == result.und_error
    console = Console(width=200, record=True)
    console.print(result_table(result, "perplexity"))
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line}
    assert f"{result.und_error:.3f}" in lines["understanding error"]
    assert f"{result.gen_gain:.4f}" in lines["generation perplexity"]  # g_G stands on the chosen row
    assert f"{result.gen_gain:.4f}" not in lines["generation NLL (nats/token)"]


def test_built_in_rows_give_the_tables_they_replace() -> None:
    assert {m.scorer for m in REGISTRY.values() if m.scorer} == set(SCORERS)  # one scorer per row
    assert dict(HIGHER_IS_BETTER) == {"und_acc": True, "gen_nll": False, "gen_fidelity": True,
                                      "gen_caption_acc": True, "gen_caption_nats": True}  # fmt: skip
    assert gen_metric_choices() == {"nll": "gen_nll", "caption_acc": "gen_caption_acc", "fidelity": "gen_fidelity"}
    assert METRICS == ("und_acc", "gen_nll", "gen_caption_acc", "gen_caption_nats")
    assert [m.name for m in listed()][-1] == "gen_fidelity"  # scored on the final model: listed last
    from searchvlm.records.reproduce import COLUMNS

    assert COLUMNS[3:7] == ("und_acc", "gen_nll", "gen_fidelity", "gen_caption_acc")
    assert late_fields() == ()
