"""When two trials compute the same thing: the canonical policy and the trial key.

L0 module (pydantic + stdlib). A sweep trains each key once (`searchvlm.sweep`): a repeat
of a key is answered from the trial that trained it. The key is the canonical explicit
policy plus every part of the trial config that changes training (not its `name`,
`cache_dir` or `save_model`, which only say where things go).

`canonical_policy` merges only policies whose training is the same computation, by rules
read off the reduced forward (`searchvlm.model.reduced`) and the FLOPs count
(`searchvlm.objectives.flops.layer_counts`), and checked bit for bit by a test that trains both
sides of each rule (`tests/test_identity.py`):

1. `name` is informational: dropped.
2. `tie_schedules` is a validation constraint (both tasks' keep and mode equal); nothing in
   the forward reads it: set to False.
3. A task whose keep ratios are all 0 or 1 never selects: a layer computes all of its image
   tokens (keep 1, `k == present`, no reduction) or none (keep 0, `k == 0`, the selector is
   not called). Its selector is irrelevant and becomes `stride`, except one with `weights`
   (`router`, `searchvlm.schema.policy.selectors`), which also creates (randomly initialised) router
   weights: not merged.
4. A task whose keep ratios are all 1 never reduces: its mode is irrelevant too (`skip`).
5. Understanding `skip` = `drop` when the keep list is non-increasing and all 0 or 1
   (`1 … 1 0 … 0`): from the first 0 layer on, both compute exactly the text rows of every
   layer with the same hidden states and positions (`skip` gathers them and passes the
   image rows through untouched; `drop` removes the image rows), and the FLOPs count is
   the same. The image rows `skip` keeps reach only the head, where no labelled token is
   predicted by an image token: the data layout closes every image with EOI
   (`searchvlm.data._layout`). Canonical mode: `drop`.
6. `seed` only seeds a `seeded` selector (`random`): set to 0 unless some task uses one in
   a layer with 0 < keep < 1.
7. `sharing.scope` is read only when q/k/v or MLP is split: None when both are shared;
   otherwise sorted without repeats, and None when it lists every layer.

Not merged (unsure or different): `query_drop` against anything (its image tokens stay
keys/values), keep ratios that differ but round to the same token count (depends on the
data's image size), fractional keep with different selectors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from searchvlm.schema.config import TrialConfig
from searchvlm.schema.policy import TASKS, ReductionPolicy, Sharing, TaskPolicy
from searchvlm.schema.policy.selectors import selector_info

#: TrialConfig fields that do not change what is trained (names and output locations)
NOT_TRAINING: frozenset[str] = frozenset({"policy", "name", "cache_dir", "save_model"})

__all__ = ["NOT_TRAINING", "canonical_policy", "trial_key"]


def _binary(keep: list[float]) -> bool:
    return all(k in (0.0, 1.0) for k in keep)


def _canonical_task(tp: TaskPolicy, task: str) -> TaskPolicy:
    """Rules 3-5 for one task."""
    keep, mode, selector = list(tp.keep), tp.mode, tp.selector
    if _binary(keep) and not selector_info(selector).weights:
        selector = "stride"  # rule 3: never consulted
    if all(k == 1.0 for k in keep):
        mode = "skip"  # rule 4: nothing is reduced
    elif task == "understanding" and mode == "skip" and _binary(keep) and keep == sorted(keep, reverse=True):
        mode = "drop"  # rule 5: 1..1 0..0
    return TaskPolicy(keep=keep, mode=mode, selector=selector)


def _uses_seed(policy: ReductionPolicy) -> bool:
    """Rule 6: the seed matters only to a seeded selector that really selects."""
    tasks = [policy.task(t) for t in TASKS]
    return any(selector_info(tp.selector).seeded and any(0.0 < k < 1.0 for k in tp.keep) for tp in tasks)


def _canonical_sharing(sharing: Sharing, num_layers: int) -> Sharing:
    """Rule 7."""
    if sharing.qkv == "shared" and sharing.mlp == "shared":
        return Sharing()
    scope = None if sharing.scope is None else sorted(set(sharing.scope))
    if scope is not None and scope == list(range(num_layers)):
        scope = None
    return sharing.model_copy(update={"scope": scope})


def canonical_policy(policy: ReductionPolicy) -> ReductionPolicy:
    """The representative of every policy whose training is the same computation (module doc)."""
    return ReductionPolicy(
        num_layers=policy.num_layers,
        understanding=_canonical_task(policy.understanding, "understanding"),
        generation=_canonical_task(policy.generation, "generation"),
        sharing=_canonical_sharing(policy.sharing, policy.num_layers),
        tie_schedules=False,
        seed=policy.seed if _uses_seed(policy) else 0,
        name=None,
    )


def key_data(config: TrialConfig) -> dict[str, Any]:
    """What the key hashes: the canonical policy and the training part of the config."""
    return {
        "policy": canonical_policy(config.resolved_policy()).model_dump(mode="json"),
        "trial": config.model_dump(mode="json", exclude=set(NOT_TRAINING)),
    }


def trial_key(config: TrialConfig) -> str:
    """16-hex key: equal for two configs exactly when a sweep trains them once."""
    text = json.dumps(key_data(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
