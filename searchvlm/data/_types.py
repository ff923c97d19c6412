"""The data containers: special token ids, `TaskSplit` (one task's rows) and `UnifiedData`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from searchvlm.schema.config import VocabLayout
from searchvlm.schema.policy import TASKS, Segment

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>")
PAD, BOS, EOS, BOI, EOI = range(len(SPECIAL_TOKENS))
IGNORE_INDEX = -100
SPLITS: tuple[str, str, str] = ("train", "val", "test")

Index = slice | np.ndarray | torch.Tensor | list[int]


def _rows(idx: Index, n: int) -> np.ndarray:
    """Any row selector (slice, int/bool array or tensor, list) -> int64 row numbers."""
    if isinstance(idx, slice):
        return np.arange(n)[idx]
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    rows = np.asarray(idx)
    if rows.dtype == bool:
        return np.flatnonzero(rows)
    return rows.astype(np.int64).reshape(-1)


@dataclass
class TaskSplit:
    """One task's examples in one split; every row has the same length and segment layout.

    `labels` follow the HF convention: -100 is not predicted; logits at t-1 predict labels[t].
    """

    input_ids: torch.Tensor  # (N, T) int64 token ids
    segments: torch.Tensor  # (N, T) int64 Segment codes
    labels: torch.Tensor  # (N, T) int64, IGNORE_INDEX where nothing is predicted
    targets: np.ndarray  # (N, A) int64 attribute / class ids of each example
    image_codes: np.ndarray  # (N, H*W) int64 image codes in [0, num_image)
    source_index: np.ndarray | None = field(default=None)  # (N,) row in the source data
    swaps: torch.Tensor | None = field(default=None)  # (N, K, L) generation: one-attribute-swapped captions

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def image_start(self) -> int:
        """Position of the first image token (the same in every row)."""
        return int((self.segments[0] == int(Segment.IMAGE)).nonzero()[0, 0])

    def batch(self, idx: Index) -> TaskSplit:
        """Rows `idx` (slice, index array/tensor, bool mask) as a new TaskSplit."""
        rows = _rows(idx, len(self))
        t = torch.from_numpy(rows)
        src = None if self.source_index is None else self.source_index[rows]
        swaps = None if self.swaps is None else self.swaps[t.to(self.swaps.device)]
        return TaskSplit(
            self.input_ids[t],
            self.segments[t],
            self.labels[t],
            self.targets[rows],
            self.image_codes[rows],
            src,
            swaps,
        )

    def to(self, device: str | torch.device) -> TaskSplit:
        """The same rows with the three tensors on `device`."""
        return TaskSplit(
            self.input_ids.to(device),
            self.segments.to(device),
            self.labels.to(device),
            self.targets,
            self.image_codes,
            self.source_index,
            None if self.swaps is None else self.swaps.to(device),
        )

    def with_caption(self, k: int) -> TaskSplit:
        """The rows with each instruction replaced by its k-th swapped caption (generation)."""
        if self.swaps is None:
            raise ValueError("this split has no swapped captions")
        ids = self.input_ids.clone()
        instr = self.segments[0] == int(Segment.INSTRUCTION)  # (T,)
        ids[:, instr] = self.swaps[:, k].to(ids.device)  # (N, L)
        return TaskSplit(ids, self.segments, self.labels, self.targets, self.image_codes, self.source_index)


@dataclass
class UnifiedData:
    """A data set's vocabulary, image geometry and the (split, task) -> TaskSplit table."""

    name: str
    vocab: VocabLayout
    image_shape: tuple[int, int]  # (H, W); an image is H*W tokens, row-major
    words: list[str]  # text token i has id vocab.num_special + i
    attributes: list[str]  # column names of TaskSplit.targets
    class_names: dict[str, list[str]]  # attribute -> name of each target id
    splits: dict[tuple[str, str], TaskSplit]
    info: dict[str, Any] = field(default_factory=dict)
    pixels: np.ndarray | None = None  # (N_source, H'*W') pixel codes of every source row
    pixel_shape: tuple[int, int] | None = None  # (H', W') pixels of an image (image_shape for pixel tokens)
    codebook: Any = None  # the patch tokenizer's Codebook; None: image codes are pixel codes

    def to_pixels(self, codes: np.ndarray) -> np.ndarray:
        """(N, M) image codes -> (N, H'*W') pixel codes (centroid images for patch codes)."""
        codes = np.asarray(codes, dtype=np.int64)
        return codes if self.codebook is None else self.codebook.decode(codes)

    def real_pixels(self, split: TaskSplit) -> np.ndarray:
        """(N, H'*W') the real pixel codes of a split's images (not the decoded tokens)."""
        if self.pixels is None or split.source_index is None:
            return split.image_codes
        return self.pixels[split.source_index]

    def split(self, split: str, task: str) -> TaskSplit:
        if split not in SPLITS:
            raise ValueError(f"split = {split!r} is not one of {SPLITS}")
        if task not in TASKS:
            raise ValueError(f"task = {task!r} is not one of {TASKS}")
        return self.splits[(split, task)]

    @property
    def num_image_tokens(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def token_name(self, token_id: int) -> str:
        """Printable name of any token id (special, word or `<img:code>`)."""
        v = self.vocab
        if token_id < v.num_special:
            return SPECIAL_TOKENS[token_id] if token_id < len(SPECIAL_TOKENS) else f"<s{token_id}>"
        if token_id < v.image_offset:
            return self.words[token_id - v.num_special]
        return f"<img:{token_id - v.image_offset}>"

    def encode_text(self, text: str) -> list[int]:
        """Whitespace-split words -> text token ids (KeyError names an unknown word)."""
        index = {w: i + self.vocab.num_special for i, w in enumerate(self.words)}
        return [index[w] for w in text.split()]

    def decode_text(self, ids: np.ndarray | torch.Tensor | list[int]) -> str:
        """Token ids -> readable string; pads dropped, an image run shown as `<image xN>`."""
        out: list[str] = []
        run = 0
        for t in np.asarray(torch.as_tensor(ids).cpu()).reshape(-1).tolist():
            if t >= self.vocab.image_offset:
                run += 1
                continue
            if run:
                out, run = out + [f"<image x{run}>"], 0
            if t != PAD:
                out.append(self.token_name(t))
        return " ".join(out + ([f"<image x{run}>"] if run else []))

    def decode_image(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, H*W) image token ids -> (N, H, W) image codes; ValueError if any is no image id."""
        ids = np.asarray(torch.as_tensor(tokens).cpu(), dtype=np.int64)
        codes = ids - self.vocab.image_offset
        if codes.size and (codes.min() < 0 or codes.max() >= self.vocab.num_image):
            bad = ids[(codes < 0) | (codes >= self.vocab.num_image)][0]
            raise ValueError(
                f"token id {bad} is not an image token (image ids are {self.vocab.image_offset}..{self.vocab.size - 1})"
            )
        return codes.reshape(-1, *self.image_shape)  # (N, H, W)

    def encode_image(self, codes: np.ndarray) -> np.ndarray:
        """(N, H, W) or (N, H*W) image codes -> (N, H*W) image token ids."""
        codes = np.asarray(codes, dtype=np.int64)
        return codes.reshape(codes.shape[0], -1) + self.vocab.image_offset  # (N, H*W)
