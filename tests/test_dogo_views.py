"""DoGo's view policy: the official transforms per peer, and every pipeline delivering it."""

import pytest
import torch

from mokd_fast.methods.dogo.views import CIFAR_MEAN, dogo_policy, peer_view
from pipelines import BACKENDS, PIPELINES


def test_views_follow_the_official_transforms() -> None:
    policy = dogo_policy(32)
    assert policy.n_global == 4 and policy.local_crops_number == 0 and policy.mean == CIFAR_MEAN
    simclr, _, simsiam, _ = policy.global_views
    assert (simclr.interpolation, simclr.scale, simclr.jitter, simclr.extra_grayscale_p) == (
        "bilinear", (0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.0)
    assert (simsiam.jitter, simsiam.grayscale_p, simsiam.extra_grayscale_p) == ((0.4, 0.4, 0.4, 0.1), 0.2, 0.2)
    assert simclr.blur_p == 0.0 and peer_view("simclr", 224).blur_p == 0.5  # blur only at 224, as official
    with pytest.raises(ValueError, match="Tiny-ImageNet"):
        dogo_policy(64)
    assert dogo_policy(64, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)).std == (0.2, 0.2, 0.2)


@pytest.mark.parametrize("backend", list(PIPELINES))
def test_every_pipeline_delivers_four_views_per_image(backend, converted_folders) -> None:
    root = converted_folders[BACKENDS[backend][2]] / "train"
    data = root / "train.beton" if BACKENDS[backend][2] == "ffcv" else root
    pipe = PIPELINES[backend](data, dogo_policy(32), 4, 1, 0, 0, 1, torch.device("cpu"))
    batch = list(pipe.epoch(0))[0]  # the whole epoch (a half-read FFCV epoch keeps its threads busy)
    assert batch.n_global == 4 and batch.global_crops.shape == (16, 3, 32, 32) and batch.local_crops is None
