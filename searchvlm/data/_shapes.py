"""The `shapes` data set: seeded, vectorised images of one coloured shape, captions, questions.

Each image (cfg.image_size square, background code 0, colour c has code c+1) holds one
shape with four attributes: shape type, colour, size (small/large) and position (a cell of
a cfg.grid x cfg.grid grid; the centre is jittered inside the cell).
understanding: one seeded question per image about one attribute, e.g.
"what colour is the circle" -> "red", "where is the red circle" -> "top left";
generation: "a large red circle at top left" -> the image.
targets: (N, 4) ids of (shape, colour, size, position), names in `class_names`.
"""

from __future__ import annotations

import numpy as np

from searchvlm.data._layout import Corpus
from searchvlm.data._types import SPLITS
from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
SIZES: tuple[str, ...] = ("small", "large")
RADIUS: tuple[float, ...] = (0.3, 0.45)  # half-extent per size, as a fraction of the cell side
ROWS = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
COLS = {2: ("left", "right"), 3: ("left", "center", "right")}
ATTRIBUTES: list[str] = ["shape", "colour", "size", "position"]
TEMPLATE_WORDS = ("a", "at", "what", "colour", "is", "the", "shape", "size", "where")
MIN_CELL = 6  # pixels per grid cell


def positions(grid: int) -> list[str]:
    return [f"{r} {c}" for r in ROWS[grid] for c in COLS[grid]]


def class_names(cfg: DataConfig) -> dict[str, list[str]]:
    return {
        "shape": list(SHAPES),
        "colour": list(COLORS[: cfg.num_colors]),
        "size": list(SIZES),
        "position": positions(cfg.grid),
    }


def uniforms(cfg: DataConfig, split: str, n: int) -> np.ndarray:
    """(n, 7) seeded uniforms, one row per image: its own stream per split, and row i does
    not depend on n, so held-out sets ignore train_size and a smaller train set is a prefix."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    return rng.random((n, 7))


def attributes(u: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Uniform columns 0..3 -> attribute ids (shape, colour, size, position), (N, 4)."""
    highs = np.array([len(SHAPES), cfg.num_colors, len(SIZES), cfg.grid * cfg.grid])
    return np.minimum((u[:, :4] * highs).astype(np.int64), highs - 1)  # (N, 4)


def _mask(shape: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Unit-radius mask of SHAPES[shape]; dx (n, 1, S), dy (n, S, 1) -> (n, S, S) bool."""
    ax, ay = np.abs(dx), np.abs(dy)
    if SHAPES[shape] == "square":
        return (ax <= 1) & (ay <= 1)
    if SHAPES[shape] == "circle":
        return dx**2 + dy**2 <= 1
    if SHAPES[shape] == "triangle":  # apex at the top
        return (ay <= 1) & (ax <= (dy + 1) / 2)
    return ((ax <= 0.35) & (ay <= 1)) | ((ay <= 0.35) & (ax <= 1))  # cross


def centres(attrs: np.ndarray, jitter: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, ...]:
    """Pixel centre (cx, cy) and radius r of each shape, each (N,); jitter (N, 2) in [-1, 1)."""
    cell = cfg.image_size / cfg.grid
    radius = np.asarray(RADIUS)[attrs[:, 2]] * cell
    room = cell / 2 - radius  # jitter that keeps the shape inside its cell
    row, col = np.divmod(attrs[:, 3], cfg.grid)
    cx = (col + 0.5) * cell + jitter[:, 0] * room
    cy = (row + 0.5) * cell + jitter[:, 1] * room
    return cx, cy, radius


def draw(attrs: np.ndarray, jitter: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Attributes (N, 4) -> image codes (N, S*S): 0 background, colour + 1 inside the shape."""
    cx, cy, r = centres(attrs, jitter, cfg)
    pix = np.arange(cfg.image_size) + 0.5  # pixel centres
    dx = (pix[None, None, :] - cx[:, None, None]) / r[:, None, None]  # (N, 1, S)
    dy = (pix[None, :, None] - cy[:, None, None]) / r[:, None, None]  # (N, S, 1)
    mask = np.zeros((len(attrs), cfg.image_size, cfg.image_size), dtype=bool)  # (N, S, S)
    for shape in range(len(SHAPES)):
        rows = attrs[:, 0] == shape
        mask[rows] = _mask(shape, dx[rows], dy[rows])
    codes = np.where(mask, attrs[:, 1, None, None] + 1, 0)  # (N, S, S)
    return codes.reshape(len(attrs), -1).astype(np.int64)  # (N, S*S)


def captions(attrs: np.ndarray, n: dict[str, list[str]]) -> list[str]:
    """The caption 'a <size> <colour> <shape> at <position>' of each row."""
    return [f"a {n['size'][z]} {n['colour'][c]} {n['shape'][s]} at {n['position'][p]}" for s, c, z, p in attrs.tolist()]


def ask(attrs: np.ndarray, kinds: np.ndarray, names: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """One question per row about attribute `kinds[i]` (0 shape, 1 colour, 2 size, 3 position)."""
    questions, answers = [], []
    for (s, c, z, p), k in zip(attrs.tolist(), kinds.tolist()):
        shape, colour = names["shape"][s], names["colour"][c]
        q = (
            f"what shape is at {names['position'][p]}",
            f"what colour is the {shape}",
            f"what size is the {shape}",
            f"where is the {colour} {shape}",
        )[k]
        questions.append(q)
        answers.append(names[ATTRIBUTES[k]][(s, c, z, p)[k]])
    return questions, answers


def vocabulary(names: dict[str, list[str]]) -> list[str]:
    words = set(TEMPLATE_WORDS)
    for values in names.values():
        words.update(w for v in values for w in v.split())
    return sorted(words)


def check(cfg: DataConfig) -> None:
    if cfg.image_size < MIN_CELL * cfg.grid:
        raise ConfigError(
            "data config",
            "data.image_size",
            cfg.image_size,
            f"shapes need at least {MIN_CELL} pixels per grid cell: image_size >= "
            f"{MIN_CELL * cfg.grid} for grid = {cfg.grid}",
        )


def _split_rows(cfg: DataConfig, split: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split's attributes (n, 4), image codes (n, S*S) and question kinds (n,)."""
    u = uniforms(cfg, split, n)
    attrs = attributes(u, cfg)
    kinds = np.minimum((u[:, 6] * len(ATTRIBUTES)).astype(np.int64), len(ATTRIBUTES) - 1)
    return attrs, draw(attrs, u[:, 4:6] * 2 - 1, cfg), kinds


def swaps(attrs: np.ndarray, names: dict[str, list[str]]) -> list[list[str]]:
    """Per row, its caption with one attribute changed, every other value of every attribute
    (shape, colour, size, position order): the alternatives of generative classification."""
    highs = [len(names[a]) for a in ATTRIBUTES]
    out: list[list[str]] = [[] for _ in range(len(attrs))]
    if not len(attrs):
        return out
    for a, high in enumerate(highs):
        for shift in range(1, high):
            alt = attrs.copy()
            alt[:, a] = (alt[:, a] + shift) % high
            for row, caption in zip(out, captions(alt, names)):
                row.append(caption)
    return out


def palette(cfg: DataConfig) -> np.ndarray:
    """(num_colors + 1, num_colors + 1) one-hot features of the pixel codes (0: background)."""
    return np.eye(cfg.num_colors + 1)


def load_shapes_corpus(cfg: DataConfig) -> Corpus:
    check(cfg)
    sizes = {"train": cfg.train_pool, "val": cfg.val_size, "test": cfg.test_size}
    parts = [_split_rows(cfg, s, sizes[s]) for s in SPLITS]
    attrs, codes, kinds = (np.concatenate(x) for x in zip(*parts))
    names = class_names(cfg)
    questions, answers = ask(attrs, kinds, names)
    bounds = np.cumsum([0] + [sizes[s] for s in SPLITS])
    splits = {s: np.arange(bounds[i], bounds[i + 1]) for i, s in enumerate(SPLITS)}
    return Corpus(
        name="shapes",
        image_codes=codes,
        image_shape=(cfg.image_size, cfg.image_size),
        num_image=cfg.num_colors + 1,
        questions=questions,
        answers=answers,
        captions=captions(attrs, names),
        targets=attrs,
        attributes=list(ATTRIBUTES),
        class_names=names,
        splits=splits,
        words=vocabulary(names),
        palette=palette(cfg),
        swaps=[None] * sizes["train"] + swaps(attrs[sizes["train"] :], names),  # held-out rows only
    )
