"""The shapes dataset: ten distinct outlines, reproducible draws, splits that never share an image."""

import math

import numpy as np
import pytest

from mokd_fast.bench.learning_proof import write_data
from mokd_fast.bench.pixel_knn import pixel_knn
from mokd_fast.sample_data.shapes import CLASSES, render, shape_mask


def test_every_class_has_its_own_outline() -> None:
    masks = {name: shape_mask(name, 64, 32, 32, 24, 0.3) for name in CLASSES}
    for name, mask in masks.items():
        assert 0.1 < mask.mean() < 0.7, f"{name} covers {mask.mean():.2f} of the image"
        assert mask[0].max() == 0 and mask[:, 0].max() == 0, f"{name} leaks past its radius"
    for a in CLASSES:
        for b in CLASSES:
            if a < b:
                overlap = np.minimum(masks[a], masks[b]).sum() / np.maximum(masks[a], masks[b]).sum()
                assert overlap < 0.85, f"{a} and {b} overlap by {overlap:.2f} at the same pose"


def test_rotation_moves_the_outline_but_keeps_its_area() -> None:
    upright, turned = (shape_mask("arrow", 64, 32, 32, 24, a) for a in (0.0, math.pi / 2))
    assert abs(upright.sum() - turned.sum()) < 0.02 * upright.sum()
    assert np.abs(upright - turned).sum() > 0.5 * upright.sum()


def test_unknown_shape_is_named() -> None:
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_mask("hexagon", 32, 16, 16, 8, 0.0)


def test_draws_are_reproducible_and_nuisances_vary() -> None:
    first = np.asarray(render("star", np.random.default_rng((3, 7)), 48))
    again = np.asarray(render("star", np.random.default_rng((3, 7)), 48))
    other = np.asarray(render("star", np.random.default_rng((3, 8)), 48))
    assert first.shape == (48, 48, 3) and np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 20  # another colour, texture and place


@pytest.mark.parametrize(("difficulty", "most"), [(0, 50.0), (2, 25.0)])
def test_splits_are_disjoint_and_pixels_tell_the_class_poorly(tmp_path, difficulty, most) -> None:
    """Chance is 10%. At full size raw pixels score 42% on difficulty 0 (upright shapes: a dark blob's
    place and outline) and 11-16% on difficulty 2 (docs/learning-health.md)."""
    data = write_data(tmp_path / "data", seed=0, train_per_class=30, val_per_class=10, size=48, difficulty=difficulty)
    train = {p.read_bytes() for p in (data / "train").rglob("*.jpg")}
    val = {p.read_bytes() for p in (data / "val").rglob("*.jpg")}
    assert len(train) == 300 and len(val) == 100 and not train & val
    assert sorted(p.name for p in (data / "train").iterdir() if p.is_dir()) == sorted(CLASSES)
    assert pixel_knn(data, k=10) < most


def test_difficulty_zero_is_a_dark_shape_on_a_solid_lighter_background_and_harder_levels_add_texture() -> None:
    for i in range(20):
        image = np.asarray(render("square", np.random.default_rng((5, i)), 64, difficulty=0), dtype=np.float32)
        luma = image @ (np.array([0.299, 0.587, 0.114]) / 255)  # [64, 64]; the square covers >= 4.7% of it
        low, high = np.percentile(luma, [3, 97])
        assert high - low > 0.25, i  # the shape 0.3 darker than the background in luma, less the noise
        assert (luma < (low + high) / 2).mean() < 0.5, i  # the dark part is the shape, not the background
        corners = (image[:4, :4], image[:4, -4:], image[-4:, :4], image[-4:, -4:])
        assert min(c.std(axis=(0, 1)).max() for c in corners) < 12  # a solid background with light noise
    textured = [np.asarray(render("square", np.random.default_rng((5, i)), 64, difficulty=2), dtype=np.float32)
                for i in range(20)]
    assert np.mean([t[:16, :16].std(axis=(0, 1)).max() for t in textured]) > 12
    with pytest.raises(ValueError, match="difficulty must be one of"):
        render("square", np.random.default_rng(0), 64, difficulty=3)
