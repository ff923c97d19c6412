"""Image tokenizers: pixel codes as they are, or a VQ-style patch codebook (`data.tokenizer`).

`patch` cuts each H x W image of pixel codes into (H/P) x (W/P) blocks of P x P pixels,
describes a block by its pixels' features (the data set's palette: a grey level for
digits, a one-hot colour for shapes) and replaces it by the nearest of K centroids of a
k-means codebook (scikit-learn), so one image token carries a shape's edge or corner
rather than one pixel's colour, as VILA-U's VQ tokens carry meaning. The codebook is
fitted on the TRAINING images only (held-out images never shape it), seeded, and cached
under `<cache_dir>/codebooks/` by a hash of the training patches and the settings.
A code decodes to its centroid block, each pixel the nearest palette entry, so sampled
generations can be looked at and judged like real images.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from searchvlm.data._layout import Corpus
from searchvlm.schema.config import TokenizerConfig
from searchvlm.schema.errors import ConfigError

_CHUNK = 65536  # blocks per distance computation


@dataclass(frozen=True)
class Codebook:
    """K centroid blocks in palette-feature space and what is needed to (de)code with them."""

    centroids: np.ndarray  # (K, P*P*F) float64
    palette: np.ndarray  # (C, F) float64: feature vector of each pixel code
    patch: int
    pixel_shape: tuple[int, int]  # (H, W)
    cache_key: str | None = field(default=None, compare=False)  # its entry codebooks/<key>.npz in a cache

    @property
    def grid(self) -> tuple[int, int]:
        return self.pixel_shape[0] // self.patch, self.pixel_shape[1] // self.patch

    def blocks(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H*W) pixel codes -> (N, M, P*P*F) block features, blocks row-major."""
        (h, w), p = self.pixel_shape, self.patch
        n = pixels.shape[0]
        feats = self.palette[pixels.reshape(n, h // p, p, w // p, p)]  # (N, h/p, p, w/p, p, F)
        feats = feats.transpose(0, 1, 3, 2, 4, 5)  # (N, h/p, w/p, p, p, F)
        return feats.reshape(n, (h // p) * (w // p), -1)  # (N, M, P*P*F)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H*W) pixel codes -> (N, M) image codes (nearest centroid of each block)."""
        x = self.blocks(np.asarray(pixels, dtype=np.int64))
        n, m, f = x.shape
        return nearest(x.reshape(n * m, f), self.centroids).reshape(n, m)  # (N, M)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, M) image codes -> (N, H*W) pixel codes of the centroid images."""
        codes = np.asarray(codes, dtype=np.int64)
        (h, w), p = self.pixel_shape, self.patch
        n, f = codes.shape[0], self.palette.shape[1]
        feats = self.centroids[codes].reshape(n, h // p, w // p, p, p, f)  # (N, h/p, w/p, p, p, F)
        feats = feats.transpose(0, 1, 3, 2, 4, 5).reshape(n * h * w, f)  # (N*H*W, F)
        return nearest(feats, self.palette).reshape(n, h * w)  # (N, H*W)


def nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest row of `centres` (K, F) for each row of `x` (N, F); ties -> lowest."""
    c2 = (centres**2).sum(1)  # (K,)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), _CHUNK):
        part = x[start : start + _CHUNK]  # (B, F)
        d = c2[None, :] - 2.0 * part @ centres.T  # (B, K): squared distance minus |x|^2
        out[start : start + _CHUNK] = d.argmin(1)
    return out


def fit_codebook(
    pixels: np.ndarray, palette: np.ndarray, pixel_shape: tuple[int, int], cfg: TokenizerConfig
) -> Codebook:
    """k-means over the distinct blocks of `pixels` (training images only), weighted by count."""
    from sklearn.cluster import KMeans

    shell = Codebook(np.zeros((1, 1)), palette.astype(np.float64), cfg.patch, pixel_shape)
    x = shell.blocks(pixels)
    x = x.reshape(-1, x.shape[-1])  # (N*M, P*P*F)
    uniq, counts = np.unique(x, axis=0, return_counts=True)
    k = min(cfg.codes, len(uniq))
    km = KMeans(n_clusters=k, n_init=3, random_state=cfg.seed).fit(uniq, sample_weight=counts)
    return replace(shell, centroids=km.cluster_centers_.astype(np.float64))


def _key(pixels: np.ndarray, palette: np.ndarray, shape: tuple[int, int], cfg: TokenizerConfig) -> str:
    h = hashlib.sha256(b"codebook/v1")
    for part in (np.ascontiguousarray(pixels, dtype=np.int64), np.ascontiguousarray(palette, dtype=np.float64)):
        h.update(part.tobytes())
    h.update(repr((shape, cfg.model_dump(mode="json"))).encode())
    return h.hexdigest()[:20]


def cached_codebook(
    pixels: np.ndarray, palette: np.ndarray, shape: tuple[int, int], cfg: TokenizerConfig, cache_dir: str | Path | None
) -> Codebook:
    """`fit_codebook`, read from / written to `<cache_dir>/codebooks/<hash>.npz` when given."""
    if cache_dir is None:
        return fit_codebook(pixels, palette, shape, cfg)
    key = _key(pixels, palette, shape, cfg)
    path = Path(cache_dir) / "codebooks" / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return Codebook(z["centroids"], palette.astype(np.float64), cfg.patch, shape, cache_key=key)
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is refitted and rewritten
    book = fit_codebook(pixels, palette, shape, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".codebook.", suffix=".npz")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, centroids=book.centroids)
    os.replace(tmp, path)
    return replace(book, cache_key=key)


def tokenize(corpus: Corpus, cfg: TokenizerConfig, cache_dir: str | Path | None = None) -> Corpus:
    """The corpus with patch codes as image tokens (`pixel`: unchanged); `pixels` keeps the
    pixel codes, `codebook` the decoder."""
    if cfg.kind == "pixel":
        return corpus
    h, w = corpus.image_shape
    if h % cfg.patch or w % cfg.patch:
        raise ConfigError(
            "data config",
            "data.tokenizer.patch",
            cfg.patch,
            f"must divide the {corpus.name} image side ({h} x {w} pixels)",
        )
    if corpus.palette is None:
        raise ConfigError("data config", "data.tokenizer.kind", cfg.kind, f"{corpus.name} has no pixel palette")
    train = corpus.image_codes[corpus.splits["train"]]
    book = cached_codebook(train, corpus.palette, (h, w), cfg, cache_dir)
    return replace(
        corpus,
        image_codes=book.encode(corpus.image_codes),
        image_shape=book.grid,
        num_image=len(book.centroids),
        pixels=corpus.image_codes,
        codebook=book,
    )
