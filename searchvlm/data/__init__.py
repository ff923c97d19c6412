"""Data for both tasks: `load_data(cfg)` -> `UnifiedData` of per-(split, task) `TaskSplit`s.

Token ids are laid out [special][text][image] (`VocabLayout`); image token id =
`vocab.image_offset + code`. Sequences (every row of a TaskSplit has the same layout):

- understanding: [BOS] [question](INSTRUCTION) [BOI] [H*W image](IMAGE) [EOI] [answer EOS](OUTPUT);
  labels on the answer words and EOS.
- generation: [BOS] [caption](INSTRUCTION) [BOI] [H*W image](IMAGE) [EOI]; labels on the image.

BOS/BOI/EOI are SYSTEM tokens. Instructions are left-padded and answers right-padded with
PAD (never labelled) to the longest row of the data set, so T is the same in every split.
Data sets: `digits` (scikit-learn), `shapes` (generated), `tokens` (your .npz/.parquet,
schema in `searchvlm.data._tokens`). Splits are disjoint, seeded by `cfg.seed` (a number:
`data.seed: run` is resolved per run seed by `DataConfig.for_seed` before loading); both
tasks use the same held-out images, and the same training images unless
`cfg.task_images = "disjoint"` gives each task its own half of them.
"""

from __future__ import annotations

from pathlib import Path

from searchvlm.data._layout import Corpus, blank_understanding_images, build, permute_answers, permute_captions
from searchvlm.data._tokenizer import tokenize
from searchvlm.data._types import (
    BOI,
    BOS,
    EOI,
    EOS,
    IGNORE_INDEX,
    PAD,
    SPECIAL_TOKENS,
    SPLITS,
    TaskSplit,
    UnifiedData,
)
from searchvlm.schema.config import DataConfig

__all__ = [
    "BOI",
    "BOS",
    "EOI",
    "EOS",
    "IGNORE_INDEX",
    "PAD",
    "SPECIAL_TOKENS",
    "SPLITS",
    "TaskSplit",
    "UnifiedData",
    "check_data",
    "load_corpus",
    "load_data",
]


def load_corpus(cfg: DataConfig) -> Corpus:
    """The untokenised rows of `cfg.name` (texts, image codes, targets, split rows)."""
    if cfg.name == "digits":
        from searchvlm.data._digits import load_digits_corpus as load
    elif cfg.name == "shapes":
        from searchvlm.data._shapes import load_shapes_corpus as load
    else:
        from searchvlm.data._tokens import load_tokens_corpus as load
    return load(cfg)


def load_data(cfg: DataConfig | None = None, cache_dir: str | Path | None = None) -> UnifiedData:
    """Load, split and tokenise the data set `cfg` names (default: digits); a patch
    tokenizer's codebook is cached under `cache_dir` when given."""
    cfg = cfg or DataConfig()
    if cfg.seed == "run":
        raise ValueError("data.seed = 'run' draws each run seed's data: load DataConfig.for_seed(seed)")
    corpus = tokenize(load_corpus(cfg), cfg.tokenizer, cache_dir)
    if cfg.permute_answers:
        corpus = permute_answers(corpus, cfg.seed)
    if cfg.permute_captions:
        corpus = permute_captions(corpus, cfg.seed)
    sizes = None if isinstance(cfg.train_size, int) else cfg.train_size
    data = build(corpus, cfg.task_images, sizes)
    return blank_understanding_images(data) if cfg.blank_understanding_images else data


def check_data(cfg: DataConfig) -> None:
    """Read and check a user's data file (`tokens`: archive or parquet readable, keys,
    dtypes, shapes, splits) before anything trains; ConfigError naming the file and key.
    The built-in data sets need no check."""
    if cfg.name == "tokens":
        load_corpus(cfg.for_seed(0))  # any seed: the file is read whole, the split is only its row numbers
