"""One explicit training loop (joint or single-task) for the unified VLM, and its evaluation.

L3 module. A `Run` owns one model under one policy: AdamW, linear warm-up then cosine
decay, gradient clipping, seeded per-task batch order. Joint and isolated runs of the same
seed draw the *same* per-task batches (each task has its own seeded sampler), so an
isolated baseline sees exactly the examples and steps the joint model sees for its task.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from searchvlm.data import SPLITS, TaskSplit, UnifiedData
from searchvlm.model import ReducedLM, apply_policy, build_model
from searchvlm.model.build import data_token_map
from searchvlm.objectives.flops import layer_counts
from searchvlm.schema.config import ModelConfig, TrainingConfig
from searchvlm.schema.metrics import REGISTRY
from searchvlm.schema.policy import TASKS, ReductionPolicy, Segment
from searchvlm.schema.policy.selectors import selector_info
from searchvlm.train.distributed import data_parallel

__all__ = [
    "Evaluation",
    "METRICS",
    "Run",
    "RunSpec",
    "SCORERS",
    "Score",
    "Scorer",
    "TrainingDiverged",
    "caption_scores",
    "check_layout",
    "generation_example_nll",
    "precision",
    "resolve_device",
    "sample_images",
    "scorer",
    "understanding_hits",
]

_TASK_SALT = {"understanding": 1009, "generation": 2003}
#: the built-in metrics a run is scored on at every evaluation round (caption metrics where the
#: data have swaps); `Run.scores` reads the registry (`searchvlm.schema.metrics`), later rows included
METRICS: tuple[str, ...] = tuple(m.name for m in REGISTRY.values() if m.scorer is not None)


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the trial is recorded as failed with the step."""


@dataclass(frozen=True)
class RunSpec:
    model: ModelConfig  # vocab filled in
    policy: ReductionPolicy
    training: TrainingConfig
    tasks: tuple[str, ...]
    seed: int


def precision(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The context a forward runs in: bf16 autocast (weights stay fp32: mixed precision) or
    nothing for fp32. CUDA fp32 matmuls use TF32 (set here, process-wide)."""
    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
            matmul.fp32_precision = "tf32"
        else:
            matmul.allow_tf32 = True
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


class _Sampler:
    """Seeded epoch-wise permutation of one task's training rows."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, min(batch, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


def _lr_lambda(cfg: TrainingConfig):
    warm = max(1, int(cfg.warmup_frac * cfg.steps))

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, cfg.steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return fn


class Run:
    """A model being trained under a policy on one or both tasks (inside the ranks of a
    data-parallel trial, `training.processes` > 1: this rank's share of every batch, see
    `searchvlm.train.distributed`)."""

    def __init__(self, spec: RunSpec, data: UnifiedData, device: torch.device):
        self.spec, self.device, self.step = spec, device, 0
        torch.manual_seed(spec.seed)
        hf = build_model(spec.model)
        # a user's model (model.hf): the data's words and VQ codes laid onto its vocabulary
        ids = data_token_map(hf, spec.model)
        self.model = apply_policy(hf, spec.policy, attention=spec.training.attention, token_map=ids)
        self.model = self.model.to(device)
        cfg = spec.training
        # inside the ranks of a data-parallel trial (training.processes > 1); None in one process
        self.ranks = data_parallel(cfg.processes, cfg.shard, device)
        if self.ranks is not None:
            self.model = self.ranks.wrap(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg))
        self.train = {t: _to(data.split("train", t), device) for t in spec.tasks}
        self.samplers = {
            t: _Sampler(len(self.train[t]), cfg.batch_size, spec.seed * 7919 + _TASK_SALT[t]) for t in spec.tasks
        }

    def train_until(self, step: int) -> float:
        """Train up to `step` (exclusive); returns the last total loss."""
        loss_value = float("nan")
        self.model.train()
        while self.step < min(step, self.spec.training.steps):
            loss_value = self._one_step()
            self.step += 1
        return loss_value

    def _one_step(self) -> float:
        cfg = self.spec.training
        total = None
        for task in self.spec.tasks:
            idx = self.samplers[task].next()  # (B,): the global batch
            batch = self.train[task].batch(idx if self.ranks is None else self.ranks.share(idx))
            with precision(self.device, cfg.dtype):
                out = self.model(batch.input_ids, segments=batch.segments, task=task, labels=batch.labels)
            if not torch.isfinite(out.loss):
                raise TrainingDiverged(f"non-finite {task} loss ({out.loss.item()}) at step {self.step}")
            term = cfg.loss_weights.get(task, 1.0) * out.loss
            if self.ranks is not None:  # this rank's share of the global batch's mean loss
                term = term * self.ranks.loss_scale(self.train[task].labels[idx])
            total = term if total is None else total + term
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.ranks is not None:
            self.ranks.average_grads(self.model)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        loss = total.detach()
        return float(loss if self.ranks is None else self.ranks.mean(loss))  # the global batch's loss

    def scores(self, data: UnifiedData, split: str, metrics: tuple[str, ...] | None = None) -> dict[str, Score]:
        """Those of `metrics` (None: every registered metric with a scorer) this run trains and
        the data set scores (caption metrics where it has swapped captions), with their
        evaluation-set standard errors, in registration order."""
        wanted = [m for m in REGISTRY.values() if m.scorer is not None and m.task in self.spec.tasks
                  and (metrics is None or m.name in metrics)]  # fmt: skip
        evaluation, out = Evaluation(self.model, data, split, self.device), {}
        with precision(self.device, self.spec.training.dtype):
            for m in wanted:
                values = SCORERS[m.scorer](evaluation)
                if values is not None:
                    out[m.name] = Score.of(values)
        return out


class Evaluation:
    """One evaluation of a model on one split, what every scorer reads: each task's split (on
    the model's device) and the forwards scorers share, computed once (the caption metrics
    reuse the NLL's)."""

    def __init__(self, model, data: UnifiedData, split: str, device: torch.device):
        self.model, self.data, self.name, self.device = model, data, split, device
        self._splits: dict[str, TaskSplit] = {}

    def split(self, task: str) -> TaskSplit:
        if task not in self._splits:
            self._splits[task] = _to(self.data.split(self.name, task), self.device)
        return self._splits[task]

    @functools.cached_property
    def gen_nll(self) -> torch.Tensor:
        """Per example (N,): the generation NLL, nats per image token."""
        return generation_example_nll(self.model, self.split("generation"))

    @functools.cached_property
    def captions(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per example (N,): caption hits and margins (`caption_scores`); None without swapped captions."""
        gen = self.split("generation")
        return None if gen.swaps is None else caption_scores(self.model, gen, self.gen_nll)


#: a metric's scorer: its per-example values (N,) on an evaluation, or None where the data set
#: does not score it (mean and standard error are taken by `Score.of`)
Scorer = Callable[[Evaluation], "torch.Tensor | None"]
#: every scorer, by the name a metric's row gives (`MetricInfo.scorer`)
SCORERS: dict[str, Scorer] = {}


def scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register the torch side of a metric (`searchvlm.schema.metrics.register_metric`)."""

    def add(fn: Scorer) -> Scorer:
        if SCORERS.get(name, fn) is not fn:
            raise ValueError(f"scorer {name!r} is already registered")
        SCORERS[name] = fn
        return fn

    return add


@scorer("und_acc")
def _und_acc(e: Evaluation) -> torch.Tensor:
    return understanding_hits(e.model, e.split("understanding")).float()


@scorer("gen_nll")
def _gen_nll(e: Evaluation) -> torch.Tensor:
    return e.gen_nll


@scorer("gen_caption_acc")
def _gen_caption_acc(e: Evaluation) -> torch.Tensor | None:
    return None if e.captions is None else e.captions[0].float()


@scorer("gen_caption_nats")
def _gen_caption_nats(e: Evaluation) -> torch.Tensor | None:
    return None if e.captions is None else e.captions[1]


@dataclass(frozen=True)
class Score:
    """A metric on an evaluation set and its standard error over the set's examples."""

    value: float
    se: float

    @classmethod
    def of(cls, per_example: torch.Tensor) -> "Score":
        """Mean of per-example values (N,) and its standard error std / sqrt(N)."""
        n = per_example.numel()
        se = float(per_example.double().std(correction=1) / math.sqrt(n)) if n > 1 else 0.0
        return cls(float(per_example.double().mean()), se)


def _to(split: TaskSplit, device: torch.device) -> TaskSplit:
    return split if split.input_ids.device == device else split.to(device)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield torch.arange(start, min(n, start + size))


def _targets_at(out, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets predicted by each surviving position (next token) and their validity mask."""
    T = labels.shape[1]
    nxt = (out.positions + 1).clamp(max=T - 1)  # (B, T_out)
    targets = labels.gather(1, nxt)  # (B, T_out)
    valid = (out.positions + 1 < T) & (targets != -100)
    return targets, valid


@torch.no_grad()
def understanding_hits(model, split: TaskSplit, batch: int = 256) -> torch.Tensor:
    """Per example (N,) bool: every answer token (and EOS) is the greedy prediction."""
    model.eval()
    hits = []
    for idx in _chunks(len(split), batch):
        b = split.batch(idx)
        out = model(b.input_ids, segments=b.segments, task="understanding")
        targets, valid = _targets_at(out, b.labels)
        hit = (out.logits.argmax(-1) == targets) | ~valid  # (B, T_out)
        hits.append(hit.all(dim=1).cpu())
    return torch.cat(hits)  # (N,)


@torch.no_grad()
def generation_example_nll(model, split: TaskSplit, batch: int = 256) -> torch.Tensor:
    """Per example (N,): mean NLL of its labelled image tokens, nats per token."""
    model.eval()
    rows = []
    for idx in _chunks(len(split), batch):
        b = split.batch(idx)
        out = model(b.input_ids, segments=b.segments, task="generation")
        targets, valid = _targets_at(out, b.labels)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # (B, T_out, V)
        nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T_out)
        rows.append(((nll * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu())  # (B,)
    return torch.cat(rows)  # (N,)


@torch.no_grad()
def caption_scores(model, split: TaskSplit, true_nll: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generative classification of each image (N,) by its captions: `hit` when the true
    caption gives the image a lower mean image-token NLL than every swapped caption (each
    differs in one attribute), and `nats`, the mean over swaps of NLL(swap) - NLL(true)."""
    true = generation_example_nll(model, split) if true_nll is None else true_nll  # (N,)
    alts = torch.stack([generation_example_nll(model, split.with_caption(k)) for k in range(split.swaps.shape[1])], 1)
    hit = (true[:, None] < alts).all(1)  # (N,)
    return hit, (alts - true[:, None]).mean(1)  # (N,), (N,)


@torch.no_grad()
def sample_images(
    model: ReducedLM, split: TaskSplit, image_offset: int, num_image: int, seed: int, batch: int = 256
) -> np.ndarray:
    """Sample every prompt's image token by token (temperature 1); returns (N, M) codes.

    Runs the reduced forward on the full-length sequence (not-yet-sampled image tokens are
    placeholders that causal attention cannot see), so the policy acts as in training.
    """
    model.eval()
    gen = torch.Generator(device=split.input_ids.device).manual_seed(seed)
    chunks = [_sample_chunk(model, split.batch(i), image_offset, num_image, gen) for i in _chunks(len(split), batch)]
    return np.concatenate(chunks, axis=0)


def _sample_chunk(model: ReducedLM, b: TaskSplit, offset: int, num_image: int, gen: torch.Generator) -> np.ndarray:
    ids = b.input_ids.clone()
    img_pos = (b.segments == Segment.IMAGE).nonzero()[:, 1].view(ids.shape[0], -1)  # (B, M)
    ids.scatter_(1, img_pos, offset)  # placeholders: code 0
    rows = torch.arange(ids.shape[0], device=ids.device)
    for j in range(img_pos.shape[1]):
        out = model(ids, segments=b.segments, task="generation")
        logits = out.logits[rows, img_pos[:, j] - 1, offset : offset + num_image]  # (B, K)
        code = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen).squeeze(1)
        ids[rows, img_pos[:, j]] = offset + code
    return (ids.gather(1, img_pos) - offset).cpu().numpy()


def check_layout(policy: ReductionPolicy, data: UnifiedData) -> None:
    """Refuses, once and before any training, a data layout the policy cannot serve (the
    forward keeps the same checks as a guard, but there they depend on the batch):

    - mode `drop` deletes image tokens, and the logits predicting token t+1 come from token
      t: no labelled token may directly follow an image token (its predictor may be gone);
    - an understanding selector that ranks by content (`SelectorInfo.content`: attention,
      pdrop, router) reads the last prompt token, so every image token must precede it.
    """
    for task in TASKS:
        tp = policy.task(task)
        for split in SPLITS:
            s = data.split(split, task)
            img = s.segments == int(Segment.IMAGE)  # (N, T)
            m, seq = int(img[0].sum()), s.seq_len
            counts = layer_counts(tp, seq, m)
            if tp.mode == "drop" and counts[-1].kept < m:
                after = (s.labels[:, 1:] != -100) & img[:, :-1]  # (N, T-1): labelled token right after an image token
                if bool(after.any()):
                    row, col = (int(v) for v in after.nonzero()[0])
                    raise ValueError(
                        f"policy {policy.name or '(unnamed)'!r}: {task} mode 'drop' removes image tokens (keeps "
                        f"{counts[-1].kept} of {m} by the last layer), but in the {split} {task} layout "
                        f"[{_runs(s.segments[row])}] the labelled token at position {col + 1} directly follows "
                        f"image token {col}, whose logits would predict it; put a non-image token (an "
                        "end-of-image token) between the image and the labels, or use mode 'query_drop' or 'skip'"
                    )
            content = selector_info(tp.selector).content
            if task == "understanding" and content and any(c.reduces and c.kept for c in counts):
                _check_prompt_after_image(policy, s, img, split)


def _check_prompt_after_image(policy: ReductionPolicy, s: TaskSplit, img: torch.Tensor, split: str) -> None:
    out = s.segments == int(Segment.OUTPUT)  # (N, T)
    none = torch.full(out.shape[:1], s.seq_len, dtype=torch.long)  # (N,): no OUTPUT token: the last one prompts
    first_out = torch.where(out.any(1), out.int().argmax(1), none)  # (N,)
    last_img = s.seq_len - 1 - img.flip(1).int().argmax(1)  # (N,)
    late = last_img >= first_out - 1  # (N,): an image token at or after the last prompt token
    if bool(late.any()):
        row = int(late.nonzero()[0])
        raise ValueError(
            f"policy {policy.name or '(unnamed)'!r}: understanding selector {policy.understanding.selector!r} "
            f"ranks the image by the last prompt token (the one before the first OUTPUT token), but in the "
            f"{split} understanding layout [{_runs(s.segments[row])}] an image token is not before it"
        )


def _runs(segments: torch.Tensor) -> str:
    """A segment row (T,) as runs: 'system 1, instruction 3, image 16, output 2'."""
    names, out, prev, n = {int(v): v.name.lower() for v in Segment}, [], None, 0
    for v in segments.tolist() + [None]:
        if v != prev and prev is not None:
            out.append(f"{names[prev]} {n}")
            n = 0
        prev, n = v, n + 1
    return ", ".join(out)
