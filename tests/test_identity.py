"""Tests of searchvlm.schema.identity: which policies a sweep trains once, checked against training.

Every merge rule is checked two ways: the canonical forms (and keys) agree, and training
both policies for a few steps gives bit-identical weights and scores (an independent check
of the rule on the real model, data layout and optimiser). Non-merges are checked too.
"""

from __future__ import annotations

import pytest
import torch

from searchvlm.schema.config import DataConfig, ModelConfig, TrainingConfig, TrialConfig
from searchvlm.schema.identity import canonical_policy, trial_key
from searchvlm.schema.policy import ReductionPolicy, Sharing, TaskPolicy

L = 4


def pol(und: tuple = (1, 1, 0, 0), mode: str = "skip", sel: str = "stride", gen: tuple = (1, 1, 1, 1),
        gmode: str = "skip", gsel: str = "stride", sharing: Sharing = Sharing(), **kw) -> ReductionPolicy:  # fmt: skip
    return ReductionPolicy(
        num_layers=L, understanding=TaskPolicy(keep=list(und), mode=mode, selector=sel),
        generation=TaskPolicy(keep=list(gen), mode=gmode, selector=gsel), sharing=sharing, **kw,
    )  # fmt: skip


def key(p: ReductionPolicy, **cfg) -> str:
    return trial_key(TrialConfig(model=ModelConfig(num_layers=L), policy=p, **cfg))


SAME = [  # (a, b, rule)
    (pol(name="t0001"), pol(name="himix"), "name"),
    (pol(mode="skip"), pol(mode="drop"), "und skip = drop on 1..1 0..0"),
    (pol(sel="attention"), pol(sel="random", mode="drop"), "selector unused on 0/1 keep"),
    (pol(gmode="query_drop", gsel="recent"), pol(), "dense task: mode and selector unused"),
    (pol(seed=3), pol(seed=0), "seed unused without a selecting random selector"),
    (pol(sharing=Sharing(scope=[1])), pol(), "scope unused when everything is shared"),
    (pol(sharing=Sharing(qkv="modality", scope=[3, 0, 1, 2, 2])), pol(sharing=Sharing(qkv="modality")), "full scope"),
    (pol(und=(1, 0.5, 0.5, 0.5), mode="skip", gen=(1, 0.5, 0.5, 0.5), tie_schedules=True),
     pol(und=(1, 0.5, 0.5, 0.5), mode="skip", gen=(1, 0.5, 0.5, 0.5)), "tie flag is not read"),
]  # fmt: skip
DIFFERENT = [
    (pol(mode="skip"), pol(mode="query_drop"), "query_drop keeps keys/values"),
    (pol(und=(1, 0, 1, 0), mode="skip"), pol(und=(1, 0, 0, 0), mode="drop"), "skip that comes back"),
    (pol(und=(1, 0.5, 0.5, 0.5), sel="stride"), pol(und=(1, 0.5, 0.5, 0.5), sel="attention"), "selector selects"),
    (pol(und=(1, 0.5, 0.5, 0.5), mode="skip"), pol(und=(1, 0.5, 0.5, 0.5), mode="drop"), "fractional skip vs drop"),
    (pol(und=(1, 0.5, 0.5, 0.5), sel="random", seed=1), pol(und=(1, 0.5, 0.5, 0.5), sel="random"), "seed used"),
    (pol(sel="router"), pol(sel="stride"), "router weights exist"),
    (pol(sharing=Sharing(qkv="modality", scope=[1])), pol(sharing=Sharing(qkv="modality")), "partial scope"),
]  # fmt: skip


@pytest.mark.parametrize("a,b,why", SAME, ids=[w for *_, w in SAME])
def test_merged(a: ReductionPolicy, b: ReductionPolicy, why: str) -> None:
    assert canonical_policy(a) == canonical_policy(b)
    assert key(a) == key(b)


@pytest.mark.parametrize("a,b,why", DIFFERENT, ids=[w for *_, w in DIFFERENT])
def test_not_merged(a: ReductionPolicy, b: ReductionPolicy, why: str) -> None:
    assert key(a) != key(b)


def test_canonical_is_a_valid_fixed_point() -> None:
    for a, b, _ in SAME + DIFFERENT:
        for p in (a, b):
            c = canonical_policy(p)
            assert canonical_policy(c) == c and ReductionPolicy.model_validate_json(c.model_dump_json()) == c


def test_key_reads_training_config_not_names() -> None:
    p = pol()
    assert key(p, name="a", cache_dir="/x", save_model="m{name}.pt") == key(p, name="b")
    assert key(p, seeds=[0]) != key(p, seeds=[1])
    assert key(p, training=TrainingConfig(steps=10)) != key(p)
    assert key(p, data=DataConfig(train_size=10)) != key(p)


def test_merged_policies_count_the_same_flops() -> None:
    from searchvlm.objectives.flops import TaskLayout, count_flops
    from searchvlm.schema.config import VocabLayout

    cfg = ModelConfig(num_layers=L, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64,
                      vocab=VocabLayout(num_special=8, num_text=24, num_image=17))  # fmt: skip
    layout = TaskLayout(num_tokens=90, num_image=64, num_logit_positions=4)
    layouts = {t: layout for t in ("understanding", "generation")}
    for a, b, _ in SAME:
        assert count_flops(cfg, a, layouts).ratio == count_flops(cfg, b, layouts).ratio


@pytest.fixture(scope="module")
def tiny():
    from searchvlm.data import load_data

    data = load_data(DataConfig(name="digits", train_size=64, val_size=32, test_size=32))
    cfg = ModelConfig(num_layers=L, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64,
                      vocab=data.vocab)  # fmt: skip
    return data, cfg


def _train(tiny, p: ReductionPolicy) -> tuple[dict, dict]:
    from searchvlm.train.training import Run, RunSpec

    data, cfg = tiny
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(RunSpec(cfg, p, TrainingConfig(steps=4, batch_size=8, eval_every=4, device="cpu"),
                          ("understanding", "generation"), 0), data, torch.device("cpu"))  # fmt: skip
        run.train_until(4)
        return run.scores(data, "val"), {k: v.clone() for k, v in run.model.state_dict().items()}
    finally:
        torch.set_num_threads(before)


def _identical(x: tuple[dict, dict], y: tuple[dict, dict]) -> bool:
    return x[0] == y[0] and x[1].keys() == y[1].keys() and all(torch.equal(x[1][k], y[1][k]) for k in x[1])


RULE_CHECKS = [(a, b, w) for a, b, w in SAME if w in (
    "und skip = drop on 1..1 0..0", "selector unused on 0/1 keep", "dense task: mode and selector unused", "full scope",
)] + [(pol(mode="skip", sharing=Sharing(qkv="task_image", mlp="task")),
       pol(mode="drop", sel="attention", sharing=Sharing(qkv="task_image", mlp="task")),
       "skip = drop, split weights")]  # fmt: skip


@pytest.mark.parametrize("a,b,why", RULE_CHECKS, ids=[w for *_, w in RULE_CHECKS])
def test_merged_policies_train_bit_identically(tiny, a: ReductionPolicy, b: ReductionPolicy, why: str) -> None:
    assert key(a) == key(b)
    assert _identical(_train(tiny, a), _train(tiny, b))


def test_unmerged_policy_trains_differently(tiny) -> None:
    """The check above can fail: query_drop (not merged) trains differently."""
    assert not _identical(_train(tiny, pol(mode="skip")), _train(tiny, pol(mode="query_drop")))
