"""Attention allocation (Eq. 2), the derived schedule, warm start, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml

from helpers.models import VOCAB
from searchvlm.data import TaskSplit
from searchvlm.model import apply_policy, build_model
from searchvlm.schema.config import ModelConfig
from searchvlm.schema.policy import ReductionPolicy, Segment, TaskPolicy, load_policy
from searchvlm.schema.space import load_space
from searchvlm.train.analysis import (
    ANALYSIS_FILE,
    SEGMENTS,
    analyze,
    analyze_model,
    derive_policy,
    derived_keep,
    load_checkpoint,
    load_report,
    measure,
    shares,
    uniform_shares,
    warm_start_policy,
)  # fmt: skip
from searchvlm.train.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
LAYOUT = [(0, 2), (1, 3), (0, 1), (2, 8), (0, 1), (3, 3)]  # system, instr, system, image, system, output


def tiny_model(policy: ReductionPolicy | None = None, uniform: bool = False):
    cfg = ModelConfig(num_layers=3, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=64, vocab=VOCAB)
    torch.manual_seed(0)
    hf = build_model(cfg)
    if uniform:  # q = 0: every causal key gets the same score, attention is uniform
        for layer in hf.model.layers:
            torch.nn.init.zeros_(layer.self_attn.q_proj.weight)
    return apply_policy(hf, policy or ReductionPolicy.dense(3))


def split(n: int = 5) -> TaskSplit:
    seg = torch.cat([torch.full((k,), s, dtype=torch.long) for s, k in LAYOUT])  # (T,)
    ids = torch.randint(0, VOCAB.size, (n, seg.numel()), generator=torch.Generator().manual_seed(1))
    return TaskSplit(ids, seg.expand(n, -1).clone(), ids.clone(), np.zeros((n, 1), dtype=np.int64),
                     np.zeros((n, 8), dtype=np.int64))  # fmt: skip


def expected_uniform(seg: torch.Tensor, is_query: torch.Tensor, is_key: torch.Tensor) -> torch.Tensor:
    """α of uniform causal attention: mean over query rows of the visible keys' segment shares."""
    rows = []
    for i in torch.nonzero(is_query).flatten().tolist():
        keys = seg[: i + 1][is_key[: i + 1]]
        rows.append(torch.stack([(keys == s).float().mean() for s in range(4)]))
    return torch.stack(rows).mean(dim=0).double()  # (4,)


def alpha_of(model, task: str = "understanding") -> torch.Tensor:
    sums, counts, _ = measure(model, split(), task, heatmap_layer=0, batch=2)
    return shares(sums, counts).double()  # (L, 4)


def test_shares_sum_to_one_per_layer() -> None:
    alpha = alpha_of(tiny_model())
    assert alpha.shape == (3, len(SEGMENTS))
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert bool((alpha >= 0).all())


def test_uniform_attention_gives_the_visible_key_fractions_exactly() -> None:
    seg = split().segments[0]
    alpha = alpha_of(tiny_model(uniform=True))
    want = expected_uniform(seg, torch.ones_like(seg, dtype=torch.bool), torch.ones_like(seg, dtype=torch.bool))
    for layer in range(3):
        assert torch.allclose(alpha[layer], want, atol=1e-6), (layer, alpha[layer], want)
    chance = torch.tensor(list(uniform_shares(seg.tolist()).values()), dtype=torch.float64)
    assert torch.allclose(chance, want, atol=1e-9)


def test_uniform_heatmap_is_one_over_visible_keys() -> None:
    _, _, heat = measure(tiny_model(uniform=True), split(), "understanding", heatmap_layer=1)
    t = heat.shape[0]
    want = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]  # (T, T)
    assert torch.allclose(heat, want, atol=1e-6)


@pytest.mark.parametrize("mode", ["skip", "query_drop"])
def test_reduced_layers_count_only_their_queries_and_keys(mode: str) -> None:
    """Layer 1 keeps no image token: skip removes image rows and columns, query_drop rows only."""
    und = TaskPolicy(keep=[1.0, 0.0, 1.0], mode=mode)
    pol = ReductionPolicy(num_layers=3, understanding=und, generation=TaskPolicy(keep=[1.0] * 3))
    seg = split().segments[0]
    text, everything = seg != Segment.IMAGE, torch.ones_like(seg, dtype=torch.bool)
    alpha = alpha_of(tiny_model(pol, uniform=True))
    want = expected_uniform(seg, text, text if mode == "skip" else everything)
    assert torch.allclose(alpha[1], want, atol=1e-6)
    assert torch.allclose(alpha[0], expected_uniform(seg, everything, everything), atol=1e-6)
    if mode == "skip":
        assert alpha[1, Segment.IMAGE] == 0


def test_derived_keep_follows_the_image_share() -> None:
    falling = [0.4, 0.3, 0.1, 0.05]
    keep = derived_keep(falling, floor=0.2)
    assert keep[0] == 1.0 and keep == sorted(keep, reverse=True) and min(keep) == 0.2
    rising = [0.2, 0.3, 0.5, 0.6]
    assert derived_keep(rising, floor=0.2) == sorted(derived_keep(rising, floor=0.2))
    assert derived_keep([0.0, 0.0], floor=0.3) == [1.0, 1.0]
    with pytest.raises(ValueError, match="floor"):
        derived_keep(falling, floor=1.5)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    data["data"].update(train_size=64, val_size=16, test_size=24)
    data["training"].update(steps=3, eval_every=3, batch_size=8, threads=1)
    data["search"]["warm_start"] = "analysis"
    data["presets"] = ["himix"]
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_derive_policy_modes_and_drop(space_file: Path) -> None:
    report = analyze(load_space(space_file), max_examples=8)
    pol = derive_policy(report, floor=0.3)
    assert (pol.understanding.mode, pol.generation.mode) == ("query_drop", "skip")
    for task in ("understanding", "generation"):
        assert pol.task(task).keep == derived_keep(report.alpha[task]["image"], 0.3)
    targets = derive_policy(report, floor=0.3, rows="targets")
    assert targets.understanding.keep == derived_keep(report.by_query["understanding"]["output"]["image"], 0.3)
    assert targets.generation.keep == derived_keep(report.by_query["generation"]["image"]["image"], 0.3)
    drop = derive_policy(report, floor=0.3, modes={"understanding": "drop"})
    keep = drop.understanding.keep
    assert all(b <= a for a, b in zip(keep, keep[1:]))


def test_warm_start_is_the_first_trial_of_the_study(space_file: Path, tmp_path: Path) -> None:
    from searchvlm.sweep._searcher import POLICY_ATTR, PRESET_ATTR, make_searcher
    from searchvlm.sweep._trainable import config_policy

    space = load_space(space_file)
    derived = warm_start_policy(space, tmp_path)
    cached = tmp_path / ANALYSIS_FILE
    assert cached.exists() and load_report(cached).source == "dense"
    stamp = cached.stat().st_mtime_ns
    assert warm_start_policy(space, tmp_path) == derived  # reuses the cached analysis
    assert cached.stat().st_mtime_ns == stamp
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = make_searcher(space, "warm", str(tmp_path / "optuna.db"), derived)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first[PRESET_ATTR] == "analysis" and config_policy(space, first) == derived
    assert second[PRESET_ATTR] == "himix" and POLICY_ATTR not in second
    study = optuna.load_study(study_name="warm", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials[0].user_attrs[PRESET_ATTR] == "analysis"


def test_checkpoint_round_trip_gives_identical_alpha(space_file: Path, tmp_path: Path) -> None:
    space = load_space(space_file)
    config = space.trial_config(None, name="rt", cache_dir=tmp_path / "cache")
    config = config.model_copy(update={"save_model": str(tmp_path / "{name}-{seed}.pt")})
    assert run_trial(config).status == "ok"
    from_ckpt = analyze(space, checkpoint=tmp_path / "rt-0.pt", max_examples=8)
    retrained = analyze(space, max_examples=8)  # same seed, same steps: the same weights
    assert from_ckpt.alpha == retrained.alpha and from_ckpt.heatmap == retrained.heatmap
    assert from_ckpt.source.startswith("checkpoint:") and from_ckpt.steps == 3
    model, cfg, meta = load_checkpoint(tmp_path / "rt-0.pt")
    assert meta["format"] == "searchvlm.checkpoint/v1" and cfg.num_layers == 4
    data_report = analyze_model(model, _data(space), max_examples=8)
    assert data_report.alpha == from_ckpt.alpha


def _data(space):
    from searchvlm.train.trial import prepare

    return prepare(space.trial_config(None))[0]


def test_bad_checkpoint_names_the_file(tmp_path: Path) -> None:
    from searchvlm.schema.errors import ConfigError

    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ConfigError, match="bad.pt.*format"):
        load_checkpoint(bad)


@pytest.mark.slow  # 10-70 s on a loaded 2-core machine: out of the fast tier
def test_cli_analyze_writes_json_plots_policy_and_mlflow(space_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from typer.testing import CliRunner

    from searchvlm.cli import app

    monkeypatch.chdir(tmp_path)
    out, export = tmp_path / "an", tmp_path / "derived.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["analyze", str(space_file), "--out", str(out), "--examples", "8", "--floor", "0.3",
            "--export", str(export), "--tracking-uri", uri, "--threads", "1"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {"analysis.json", "allocation.png", "heatmap.png"} <= {p.name for p in out.iterdir()}
    pol = load_policy(export, num_layers=4)
    assert pol.name == "analysis" and min(pol.understanding.keep) >= 0.3
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("searchvlm").experiment_id])
    assert any(r.data.tags.get("kind") == "analysis" for r in runs)
    bad = CliRunner().invoke(app, ["analyze", str(space_file), "--heatmap-layer", "9", "--out", str(out)])
    assert bad.exit_code == 2 and "--heatmap-layer" in bad.output


def test_cli_analyze_honours_runs_dir(space_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --out, outputs go under --runs-dir (and nothing into ./runs)."""
    from typer.testing import CliRunner

    from searchvlm.cli import app

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "elsewhere"
    res = CliRunner().invoke(app, ["analyze", str(space_file), "--runs-dir", str(runs), "--examples", "8",
                                   "--threads", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    target = runs / f"analysis-{space_file.stem}"
    assert {"analysis.json", "allocation.png", "heatmap.png", "policy.json"} <= {p.name for p in target.iterdir()}
    assert not (tmp_path / "runs").exists()
