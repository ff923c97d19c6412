"""Typed configuration of a trial (model, data, training, synergy); its result record is `trial_result`.

L0 module: pydantic + stdlib only (`model.hf` is read as JSON by `searchvlm.schema._hf`). Every
field is documented; the docs become CLI help and YAML comments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from searchvlm.schema._hf import read_dims
from searchvlm.schema._strict import Strict as _Strict
from searchvlm.schema.metrics import GenMetric, gen_metric_doc
from searchvlm.schema.policy import ReductionPolicy

__all__ = [
    "DataConfig",
    "GENERATION_CONTROLS",
    "ModelConfig",
    "SynergyConfig",
    "TaskSizes",
    "TokenizerConfig",
    "TrainingConfig",
    "TrialConfig",
    "UNDERSTANDING_CONTROLS",
    "VocabLayout",
    "check_gen_metric",
]


class VocabLayout(_Strict):
    """Token-id layout: [special tokens][text tokens][image tokens]."""

    num_special: int = Field(ge=1, description="special tokens (pad, bos, eos, boi, eoi, ...)")
    num_text: int = Field(ge=1, description="text (word) tokens")
    num_image: int = Field(ge=2, description="image codes (VQ codebook / palette size)")

    @property
    def size(self) -> int:
        return self.num_special + self.num_text + self.num_image

    @property
    def image_offset(self) -> int:
        return self.num_special + self.num_text


class ModelConfig(_Strict):
    """The small unified VLM: a Llama-family decoder built locally from these numbers, or a
    user's own architecture (`hf`: a local HF config or checkpoint directory, whose
    config.json then supplies the numbers)."""

    num_layers: int = Field(4, ge=1, le=128, description="decoder layers")
    hidden_size: int = Field(96, ge=8, description="model width d")
    num_heads: int = Field(4, ge=1, description="attention heads")
    num_kv_heads: int = Field(2, ge=1, description="key/value heads (GQA when < num_heads)")
    intermediate_size: int = Field(256, ge=8, description="SwiGLU MLP width m")
    rope_theta: float = Field(10000.0, gt=0, description="rotary embedding base")
    max_positions: int = Field(1024, ge=16, description="maximum sequence length")
    vocab: VocabLayout | None = Field(None, description="filled from the data set when omitted")
    hf: str | None = Field(
        None,
        description="a local Hugging Face config or checkpoint directory (config.json; e.g. a tiny "
        "Chameleon or Emu3): trials train this architecture, the numbers above are read from it "
        "(given ones must agree) and data: tokens is mapped onto its image-token ids",
    )
    pretrained: bool = Field(
        False, description="hf: load the checkpoint's weights (true) or initialise config.json's architecture (false)"
    )
    vocab_size: int | None = Field(
        None, ge=2, description="LM head width when it is not vocab.size (hf: the model's vocabulary, read from it)"
    )
    tie_embeddings: bool = Field(
        False,
        description="built-in model: the LM head shares the input embedding matrix (one image-token space "
        "for reading and writing images, as aligned input/output visual spaces)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_hf(cls, data: Any) -> Any:
        """With `hf`: its config.json's numbers (a given number must agree), the path absolute
        (trials may run in another working directory)."""
        if not isinstance(data, dict) or not data.get("hf"):
            return data
        dims = read_dims(data["hf"])
        for key, value in dims.items():
            if key in data and data[key] is not None and data[key] != value:
                raise ValueError(
                    f"model.{key} = {data[key]} but model.hf = {data['hf']!r} says {value}; "
                    f"leave model.{key} out (it is read from the HF config)"
                )
        return {**data, **dims, "hf": str(Path(data["hf"]).resolve())}

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The built-in model serialises as before `hf` existed (same cache keys and hashes)."""
        out = handler(self)
        for key, default in (("hf", None), ("pretrained", False), ("vocab_size", None), ("tie_embeddings", False)):
            if out.get(key, default) == default:
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _heads(self) -> "ModelConfig":
        if self.tie_embeddings and self.hf is not None:
            raise ValueError("model.tie_embeddings applies to the built-in model; model.hf's config.json says its own")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size = {self.hidden_size} must be divisible by num_heads = {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads = {self.num_heads} must be divisible by num_kv_heads = {self.num_kv_heads}")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim


class TaskSizes(_Strict):
    """Training images per task (`data.train_size: {understanding: N, generation: M}`)."""

    understanding: int = Field(ge=1, description="understanding training images")
    generation: int = Field(ge=1, description="generation training images")


class TokenizerConfig(_Strict):
    """How an image becomes image tokens (digits and shapes; `tokens` data are already tokens)."""

    kind: Literal["pixel", "patch"] = Field(
        "pixel",
        description="pixel: one code per pixel (grey level / colour) | patch: a VQ-style codebook over "
        "patch x patch pixel blocks (k-means fitted on the training images only; codes decode to centroids)",
    )
    patch: int = Field(4, ge=1, le=16, description="patch: side of a patch in pixels (must divide the image side)")
    codes: int = Field(64, ge=2, le=4096, description="patch: codebook size (image codes)")
    seed: int = Field(0, description="patch: seed of the k-means fit")


#: DataConfig's controls that change understanding's training data only (a generation-only
#: run is the same with or without them); each serialises only when set
UNDERSTANDING_CONTROLS = ("permute_answers", "blank_understanding_images")
#: ... and the one that changes generation's training data only (understanding-only runs unchanged)
GENERATION_CONTROLS = ("permute_captions",)


class DataConfig(_Strict):
    """Where the two tasks' examples come from. Nothing is downloaded."""

    name: Literal["digits", "shapes", "tokens"] = Field(
        "digits", description="digits (scikit-learn) | shapes (generated) | tokens (your .npz/parquet)"
    )
    train_size: int | TaskSizes = Field(
        700,
        description="training images: one number (shared by both tasks, or halved with task_images: "
        "disjoint), or {understanding: N, generation: M} per task (shared: the smaller set is a subset "
        "of the larger; disjoint: N + M different images)",
    )
    val_size: int = Field(200, ge=1, description="validation images (evaluation rounds)")
    test_size: int = Field(397, ge=1, description="held-out test images (final scores)")
    image_size: int = Field(16, ge=4, le=64, description="shapes: image side in pixels")
    num_colors: int = Field(4, ge=2, le=8, description="shapes: palette colours (plus background)")
    grid: int = Field(2, ge=2, le=3, description="shapes: positions per side (2: quadrants, 3: 3x3 grid)")
    path: str | None = Field(
        None,
        description="tokens: path of the .npz or .parquet file (a relative one is relative to the working "
        "directory of the command; made absolute when the space is loaded, so a trial in its own working "
        "directory or on another node of a cluster opens the same path)",
    )
    seed: int | Literal["run"] = Field(
        0,
        description="seed of the data: the split (training, validation and test images) and generated "
        "images. A number: the same data for every seed of `seeds`. run: each run seed draws its own data "
        "(seed s trains and is scored on data.seed s), the same for every policy on that seed, so fresh "
        "seeds are fresh data",
    )
    task_images: Literal["shared", "disjoint"] = Field(
        "shared",
        description="shared: both tasks train on the same images; disjoint: each task gets its "
        "own half of the training images (like separate understanding / generation data sets)",
    )
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="image tokens: pixel codes or a patch codebook"
    )
    permute_answers: bool = Field(
        False,
        description="control: shuffle the understanding answers across training images (seeded), so "
        "understanding data carry no information about images; a generation gain that survives it "
        "is regularisation, not transfer",
    )
    blank_understanding_images: bool = Field(
        False,
        description="control: every understanding training row's image tokens become one constant "
        "code (the training images' most frequent), so understanding trains on text only; held-out "
        "rows and generation's images are untouched",
    )
    permute_captions: bool = Field(
        False,
        description="control (g_U's): shuffle the generation captions across training images (seeded), so "
        "generation data carry no information about which image a text describes; an understanding gain "
        "that survives it is regularisation or extra image modelling, not transfer from captions",
    )

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_or_run(cls, value: Any) -> Any:
        """One message for a bad seed (the union would give one per member)."""
        if value == "run" or isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() or isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"{value!r} is neither a whole number nor 'run' (each run seed draws its own data)")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """Absolute against the working directory (`~` expanded; symlinks kept as given)."""
        return None if value is None else os.path.abspath(os.path.expanduser(value))

    @field_validator("train_size")
    @classmethod
    def _positive(cls, value: int | TaskSizes) -> int | TaskSizes:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"train_size = {value} must be at least 1")
        return value

    @model_validator(mode="after")
    def _tokens_untouched(self) -> "DataConfig":
        if self.name == "tokens" and self.tokenizer.kind != "pixel":
            raise ValueError("data.tokenizer applies to digits and shapes; `tokens` data are already image tokens")
        return self

    def for_seed(self, seed: int) -> "DataConfig":
        """The data one run seed trains on: `seed: run` becomes that seed, a number stays."""
        return self.model_copy(update={"seed": seed}) if self.seed == "run" else self

    @property
    def train_pool(self) -> int:
        """Training images the data set must provide for both tasks."""
        sizes = self.train_size
        if isinstance(sizes, int):
            return sizes
        if self.task_images == "disjoint":
            return sizes.understanding + sizes.generation
        return max(sizes.understanding, sizes.generation)

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """New keys serialise only when set (same cache keys and hashes as before they existed)."""
        out = handler(self)
        if self.tokenizer == TokenizerConfig():
            out.pop("tokenizer", None)
        for control in UNDERSTANDING_CONTROLS + GENERATION_CONTROLS:
            if not getattr(self, control):
                out.pop(control, None)
        return out


class TrainingConfig(_Strict):
    """One explicit training loop: AdamW, warm-up + cosine decay, gradient clipping."""

    steps: int = Field(500, ge=1, description="optimizer steps (each: one batch per task)")
    batch_size: int = Field(32, ge=1, description="examples per task per step")
    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_frac: float = Field(0.05, ge=0, le=1, description="share of steps spent warming up")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    eval_every: int = Field(100, ge=1, description="steps between evaluation rounds (reports)")
    loss_weights: dict[Literal["understanding", "generation"], float] = Field(
        default_factory=lambda: {"understanding": 1.0, "generation": 1.0},
        description="per-task loss weights in joint training",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="attention kernel of the reduced forward (eager: plain matmuls)"
    )
    threads: int | None = Field(None, ge=1, description="torch threads (None: leave as is)")
    dtype: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32 | bf16: forward passes under bf16 autocast, weights, gradients and optimizer "
        "state in fp32 (mixed precision); on CUDA, fp32 matmuls use TF32 either way; FLOPs are unchanged",
    )
    processes: int = Field(
        1,
        ge=1,
        description="processes a trial (and each of its baselines) trains on, data parallel under "
        "torch.distributed: on CUDA one per GPU (cuda:0, cuda:1, ...; search.gpus_per_trial above 1 sets it), "
        "on the CPU gloo processes sharing cpus_per_trial. Each draws its share of every batch (the global "
        "batch stays batch_size per task), evaluation gives one process's numbers, rank 0 reports and writes; "
        "a failing rank fails the trial. 1: the trial's own process",
    )
    shard: Literal["none", "ddp", "fsdp"] = Field(
        "none",
        description="how processes above 1 hold the model: ddp (every rank holds it whole; gradients "
        "averaged over the ranks after each backward, one all-reduce) | fsdp (FSDP2 fully_shard per decoder "
        "layer and on the wrapper: parameters, gradients and optimizer state sharded over the ranks); none: "
        "one process only (with processes 1, ddp and fsdp train as none: there is nothing to share)",
    )

    @model_validator(mode="after")
    def _data_parallel(self) -> "TrainingConfig":
        self._check_split(self.processes, f"training.processes = {self.processes}")
        return self

    def on_gpus(self, gpus_per_trial: float) -> "TrainingConfig":
        """The training of a trial that Ray gives `gpus_per_trial` GPUs: above 1, one process
        per GPU (`processes` at 1 is set to the count; another count is refused)."""
        if gpus_per_trial <= 1:
            return self
        gpus = int(gpus_per_trial)
        if self.processes not in (1, gpus):
            raise ValueError(
                f"training.processes = {self.processes} but search.gpus_per_trial = {gpus_per_trial:g}: a trial "
                f"trains one process per GPU (leave processes at 1, or set it to {gpus})"
            )
        self._check_split(gpus, f"search.gpus_per_trial = {gpus_per_trial:g} (one process per GPU)")
        return self.model_copy(update={"processes": gpus})

    def _check_split(self, processes: int, why: str) -> None:
        """More than one process trains data parallel: it needs a `shard` and one example per process."""
        if processes > 1 and self.shard == "none":
            raise ValueError(f"{why} trains data parallel over {processes} processes: set training.shard to "
                             "ddp or fsdp")  # fmt: skip
        if self.batch_size < processes:
            raise ValueError(f"training.batch_size = {self.batch_size} is split over {processes} processes "
                             f"({why}): each needs at least one example per task")  # fmt: skip

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`dtype`, `processes` and `shard` are left out at their defaults (fp32, 1, none):
        cache keys and space hashes stay as before they existed."""
        out = handler(self)
        for key, default in (("dtype", "fp32"), ("processes", 1), ("shard", "none")):
            if out.get(key, default) == default:
                out.pop(key, None)
        return out


class SynergyConfig(_Strict):
    """How joint-over-isolated synergy gain is computed (docs/definitions.md)."""

    aggregate: Literal["min", "mean"] = Field("min", description="min: both tasks must gain")
    baseline: Literal["dense", "matched"] = Field(
        "dense", description="dense: cached dense single-task models; matched: same policy alone"
    )
    fidelity: bool = Field(False, description="also score sampled generations (final model) with a classifier")
    at: Literal["best", "final"] = Field(
        "best",
        description="checkpoint scored per run and task: best (the evaluation round with the best "
        "validation metric, early stopping) | final (the last step)",
    )
    vs_dense: bool = Field(
        False,
        description="also train the dense joint model on the same seeds (cached) and report "
        "synergy_vs_dense, the paired difference of synergy against it",
    )
    gen_metric: GenMetric = Field("nll", description=gen_metric_doc())  # the choices: `searchvlm.schema.metrics`

    @model_validator(mode="after")
    def _fidelity_scored(self) -> "SynergyConfig":
        if self.gen_metric == "fidelity" and not self.fidelity:
            raise ValueError("synergy.gen_metric = 'fidelity' needs synergy.fidelity: true (samples are scored then)")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if self.gen_metric == "nll":
            out.pop("gen_metric", None)
        return out


def check_gen_metric(data: DataConfig, synergy: SynergyConfig) -> None:
    """`synergy.gen_metric: caption_acc` needs captions that differ in one attribute, which
    digits and shapes have and a user's `tokens` data do not."""
    if synergy.gen_metric == "caption_acc" and data.name == "tokens":
        raise ValueError(
            "synergy.gen_metric = 'caption_acc' needs captions that differ in one attribute (digits, shapes); "
            "data.name = 'tokens' has none: use gen_metric: nll or fidelity"
        )


class TrialConfig(_Strict):
    """Everything one trial needs; `policy` is the explicit policy to train under."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    synergy: SynergyConfig = SynergyConfig()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="paired seeds")
    policy: ReductionPolicy | None = Field(None, description="None: dense")
    cache_dir: str = Field("runs/cache", description="where isolated baselines are cached")
    name: str = Field("trial", description="trial name")
    save_model: str | None = Field(
        None,
        description="path template ({name}, {seed}) where the first seed's trained joint model is "
        "saved for `searchvlm analyze --checkpoint` (configs as JSON + state dict); None: not saved",
    )

    @model_validator(mode="after")
    def _gen_metric(self) -> "TrialConfig":
        check_gen_metric(self.data, self.synergy)
        return self

    @model_validator(mode="after")
    def _layers(self) -> "TrialConfig":
        if self.policy is not None and self.policy.num_layers != self.model.num_layers:
            raise ValueError(
                f"policy.num_layers = {self.policy.num_layers} must equal model.num_layers = {self.model.num_layers}"
            )
        return self

    def resolved_policy(self) -> ReductionPolicy:
        return self.policy or ReductionPolicy.dense(self.model.num_layers)
