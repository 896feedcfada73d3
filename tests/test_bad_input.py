"""Bad configurations and inputs fail early with a message naming the value and what is valid."""

import pytest
import torch

from mokd_fast import MOKD, MOKDConfig
from tests.conftest import random_crops, small_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"arch_cnn": "resnet5O"}, r"unknown CNN \(--arch_cnn\) architecture 'resnet5O'.*resnet18.*Closest names: resnet50"),
        ({"arch_vit": "vit_smal"}, r"unknown ViT \(--arch_vit\) architecture 'vit_smal'.*vit_tiny, vit_small, vit_base"),
        ({"arch_cnn": "vit_small_patch16_224"}, r"--arch_cnn 'vit_small_patch16_224'.*not an NCHW feature map"),
        ({"arch_vit": "resnet18"}, r"--arch_vit 'resnet18' is not a timm VisionTransformer"),
        ({"arch_vit": "vit_medium_patch16_gap_256"}, r"not a timm VisionTransformer with a class token"),
        ({"global_size": 60}, r"global_size=60 is not divisible by the ViT patch size 16 \(vit_tiny\); use a multiple of 16"),
        ({"local_size": 40, "patch_size": 16}, r"local_size=40 is not divisible by the ViT patch size 16"),
    ],
)
def test_bad_architecture_or_sizes(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MOKD(small_config(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"out_dim": 0}, r"out_dim must be >= 1, got 0"),
        ({"local_crops_number": 0}, r"local_crops_number must be >= 1"),
        ({"epochs": 4}, r"warmup_teacher_temp_epochs_cnn=5 must lie in \[0, epochs=4\]"),
        ({"teacher_temp": 0.0}, r"teacher_temp must be > 0"),
        ({"momentum_teacher": 1.5}, r"momentum_teacher must lie in \[0, 1\]"),
    ],
)
def test_bad_config_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown MOKDConfig keys \['out_dims'\]"):
        MOKDConfig.from_dict({"out_dims": 10})


def test_crops_that_do_not_match_the_config() -> None:
    model = MOKD(small_config())
    crops = random_crops(model.cfg, batch=2)
    with pytest.raises(ValueError, match=r"local_crops has shape \(4, 3, 48, 48\), expected \(4, 3, 32, 32\)"):
        model.loss_terms(crops[:2] + [torch.randn(2, 3, 48, 48)] * 2, 0)
    with pytest.raises(ValueError, match=r"local_crops has shape \(2, 3, 32, 32\), expected \(4, 3, 32, 32\).*local_crops_number=2"):
        model.loss_terms(crops[:3], 0)
    with pytest.raises(ValueError, match=r"need 2 global views and at least 1 local view"):
        model.loss_terms(crops[:2], 0)
    with pytest.raises(ValueError, match=r"epoch 10 is outside the configured schedule \[0, 10\)"):
        model.loss_terms(crops, 10)
