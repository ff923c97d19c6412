"""The generated `shapes` data: the words of captions and answers match the drawn pixels."""

from __future__ import annotations

import numpy as np
import pytest

from searchvlm.data import UnifiedData, load_data
from searchvlm.schema.config import DataConfig
from searchvlm.schema.errors import ConfigError

CFG = DataConfig(name="shapes", train_size=200, val_size=20, test_size=20, seed=1)


@pytest.fixture(scope="module")
def data() -> UnifiedData:
    return load_data(CFG)


def _names(data: UnifiedData, targets: np.ndarray) -> dict[str, str]:
    return {a: data.class_names[a][t] for a, t in zip(data.attributes, targets)}


def _instruction(data: UnifiedData, row: np.ndarray) -> str:
    return data.decode_text(row).split("<boi>")[0].removeprefix("<bos>").strip()


def test_vocab_and_geometry(data: UnifiedData) -> None:
    assert data.vocab.num_image == CFG.num_colors + 1
    assert data.image_shape == (CFG.image_size, CFG.image_size)
    assert data.attributes == ["shape", "colour", "size", "position"]


def test_caption_names_every_attribute(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    for row, t in zip(part.input_ids[:30].numpy(), part.targets[:30]):
        n = _names(data, t)
        assert _instruction(data, row) == f"a {n['size']} {n['colour']} {n['shape']} at {n['position']}"


def test_only_the_captioned_colour_is_drawn(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    for codes, t in zip(part.image_codes, part.targets):
        assert set(np.unique(codes).tolist()) == {0, int(t[1]) + 1}


def test_shape_centroid_lies_in_its_cell(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    cell = CFG.image_size / CFG.grid
    images = part.image_codes.reshape(len(part), CFG.image_size, CFG.image_size)
    for image, t in zip(images, part.targets):
        ys, xs = np.nonzero(image)
        row, col = divmod(int(t[3]), CFG.grid)
        assert int((ys.mean() + 0.5) // cell) == row and int((xs.mean() + 0.5) // cell) == col


def test_large_shapes_cover_more_pixels(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    area = (part.image_codes > 0).sum(axis=1)
    for shape in range(len(data.class_names["shape"])):
        small = area[(part.targets[:, 0] == shape) & (part.targets[:, 2] == 0)]
        large = area[(part.targets[:, 0] == shape) & (part.targets[:, 2] == 1)]
        assert small.size and large.size and small.max() < large.min()


def test_triangle_widens_downwards(data: UnifiedData) -> None:
    part = data.split("train", "generation")
    images = part.image_codes.reshape(len(part), CFG.image_size, CFG.image_size) > 0
    for image in images[part.targets[:, 0] == 2]:
        widths = image.sum(axis=1)[image.any(axis=1)]
        assert widths[-1] > widths[0]


def test_answers_match_the_asked_attribute(data: UnifiedData) -> None:
    part = data.split("train", "understanding")
    kinds = {"what shape": "shape", "what colour": "colour", "what size": "size", "where is": "position"}
    for row, t in zip(part.input_ids[:60].numpy(), part.targets[:60]):
        question, answer = data.decode_text(row).split("<eoi>")
        asked = kinds[" ".join(_instruction(data, row).split()[:2])]
        assert answer.split() == _names(data, t)[asked].split() + ["<eos>"]


def test_ten_thousand_images_load() -> None:  # their speed is a benchmark's (no timed tests)
    data = load_data(DataConfig(name="shapes", train_size=10_000, val_size=10, test_size=10))
    assert len(data.split("train", "generation")) == 10_000
    assert len({tuple(r) for r in data.split("train", "generation").image_codes[:2000].tolist()}) > 1000


def test_grid_three_needs_room() -> None:
    data = load_data(DataConfig(name="shapes", grid=3, image_size=18, train_size=20, val_size=5, test_size=5))
    assert len(data.class_names["position"]) == 9
    with pytest.raises(ConfigError, match="data.image_size"):
        load_data(DataConfig(name="shapes", grid=3, image_size=16))
