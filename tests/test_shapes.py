"""Output shapes and dtypes for the official pairs and for timm names."""

import pytest
import torch

from mokd_fast import LOSS_TERMS, MOKD
from tests.conftest import random_crops, small_config


@pytest.mark.parametrize(
    ("arch_cnn", "arch_vit", "cnn_width", "vit_width"),
    [
        ("resnet18", "vit_tiny", 512, 192),
        ("resnet50", "vit_small", 2048, 384),
        ("convnext_atto", "deit_tiny_patch16_224", 320, 192),  # any timm CNN + timm ViT
    ],
)
def test_outputs_have_the_documented_shapes(arch_cnn: str, arch_vit: str, cnn_width: int, vit_width: int) -> None:
    torch.manual_seed(0)
    cfg = small_config(arch_cnn=arch_cnn, arch_vit=arch_vit, out_dim=64, local_crops_number=3)
    model = MOKD(cfg)
    batch, n_local = 2, cfg.local_crops_number
    crops = random_crops(cfg, batch)
    students, teachers = model.forward_all(crops)
    k = cfg.out_dim
    views = (2 + n_local) * batch
    assert students.cnn_dino.shape == students.cnn_thead.shape == (views, k)
    assert students.vit_dino.shape == students.vit_thead.shape == (views, k)
    assert students.cnn_query.shape == students.vit_query.shape == (n_local * batch, vit_width)
    for name in ("cnn_dino", "cnn_thead", "vit_dino", "vit_thead"):
        assert getattr(teachers, name).shape == (2 * batch, k)
        assert not getattr(teachers, name).requires_grad
    assert teachers.cnn_search.shape == teachers.vit_search.shape == (n_local * batch, k)
    assert model.students.cnn.head.mlp[0].in_features == cnn_width
    terms = model.criterion(students, teachers, 0)
    assert list(terms) == list(LOSS_TERMS)
    for name, value in terms.items():
        assert value.shape == () and value.dtype == torch.float32 and torch.isfinite(value), name


def test_backbones_yield_feature_and_map_or_tokens() -> None:
    model = MOKD(small_config())
    x = torch.randn(2, 3, 64, 64)
    enc_cnn = model.students.cnn.encode(x)
    assert enc_cnn.pooled.shape == (2, 512)
    assert enc_cnn.grid_hw == (2, 2) and enc_cnn.tokens.shape == (2, 4, 192)
    enc_vit = model.students.vit.encode(x)
    assert enc_vit.pooled.shape == (2, 192) and enc_vit.grid_hw == (4, 4)
    assert enc_vit.tokens.shape == (2, 16, 192)


def test_gains_and_stochastic_depth_follow_the_official_code() -> None:
    model = MOKD(small_config(drop_path_rate=0.1))
    assert not model.students.cnn.head.last_layer.weight_g.requires_grad
    assert model.students.vit.head.last_layer.weight_g.requires_grad
    assert model.students.cnn.transhead.last_layer.weight_g.requires_grad
    assert model.students.vit.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert isinstance(model.teachers.vit.backbone.blocks[-1].drop_path1, torch.nn.Identity)
    assert not any(p.requires_grad for p in model.teachers.parameters())
    frozen = MOKD(small_config(norm_last_layer=True))
    assert not frozen.students.vit.head.last_layer.weight_g.requires_grad
    free = MOKD(small_config(norm_last_layer=False))
    assert free.students.cnn.head.last_layer.weight_g.requires_grad


def test_use_bn_in_head_adds_batchnorm() -> None:
    model = MOKD(small_config(use_bn_in_head=True))
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.students.vit.head.mlp)
    terms = model.loss_terms(random_crops(model.cfg, 2), 0)
    assert all(torch.isfinite(v) for v in terms.values())


def test_patch_size_8_alias() -> None:
    cfg = small_config(patch_size=8, global_size=32, local_size=16)
    model = MOKD(cfg)
    assert model.students.vit.backbone.pos_embed.shape == (1, 1 + (224 // 8) ** 2, 192)
    terms = model.loss_terms(random_crops(cfg, 2), 0)
    assert all(torch.isfinite(v) for v in terms.values())
