"""Official checkpoint layout: load, export, and what the official eval scripts read."""

import pytest
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer

from mokd_fast import MOKD
from tests.conftest import small_config

OUT_DIM = 256


def _official_head_keys(prefix: str, in_dim: int) -> dict[str, tuple[int, ...]]:
    """Keys of the official DINOHead (no BN): mlp.{0,2,4} Linear, weight-normed last layer."""
    return {
        f"{prefix}mlp.0.weight": (2048, in_dim), f"{prefix}mlp.0.bias": (2048,),
        f"{prefix}mlp.2.weight": (2048, 2048), f"{prefix}mlp.2.bias": (2048,),
        f"{prefix}mlp.4.weight": (256, 2048), f"{prefix}mlp.4.bias": (256,),
        f"{prefix}last_layer.weight_g": (OUT_DIM, 1), f"{prefix}last_layer.weight_v": (OUT_DIM, 256),
    }


def _official_block_keys(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}norm1.weight": (dim,), f"{prefix}norm1.bias": (dim,),
        f"{prefix}attn.qkv.weight": (3 * dim, dim), f"{prefix}attn.qkv.bias": (3 * dim,),
        f"{prefix}attn.proj.weight": (dim, dim), f"{prefix}attn.proj.bias": (dim,),
        f"{prefix}norm2.weight": (dim,), f"{prefix}norm2.bias": (dim,),
        f"{prefix}mlp.fc1.weight": (4 * dim, dim), f"{prefix}mlp.fc1.bias": (4 * dim,),
        f"{prefix}mlp.fc2.weight": (dim, 4 * dim), f"{prefix}mlp.fc2.bias": (dim,),
    }


def _official_thead_keys(prefix: str, dim: int, grid: int, in_chans: int | None) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}pos_embed": (1, grid * grid, dim)}
    if in_chans is not None:
        keys |= {f"{prefix}patch_embed.weight": (dim, in_chans, 1, 1), f"{prefix}patch_embed.bias": (dim,)}
    for i in range(3):
        keys |= _official_block_keys(f"{prefix}blocks.{i}.", dim)
    keys |= {f"{prefix}norm.weight": (dim,), f"{prefix}norm.bias": (dim,)}
    keys |= {f"{prefix}last_layer.weight_g": (OUT_DIM, 1), f"{prefix}last_layer.weight_v": (OUT_DIM, dim)}
    return keys


def official_layout() -> dict:
    """A checkpoint as the official main_mokd.py writes it for resnet18 + vit_tiny/16, random values.

    The key schema is written from the official sources: its ResNet is torchvision's (fc replaced by
    Identity), its ViT has cls_token, a 197-entry pos_embed, patch_embed.proj and 12 blocks; both
    students and the BatchNorm-carrying CNN teacher are DDP-wrapped ("module."), the ViT teacher is not.
    """
    gen = torch.Generator().manual_seed(7)

    def fill(keys: dict[str, tuple[int, ...]], prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        for k, shape in keys.items():
            if k.endswith("num_batches_tracked"):
                out[prefix + k] = torch.tensor(5)
            else:
                out[prefix + k] = torch.randn(shape, generator=gen).abs() + 0.1 if "running_var" in k else torch.randn(shape, generator=gen)
        return out

    resnet = torchvision.models.resnet18()
    resnet.fc = torch.nn.Identity()
    cnn = {f"backbone.{k}": tuple(v.shape) for k, v in resnet.state_dict().items()}
    cnn |= _official_head_keys("head.", 512) | _official_thead_keys("transhead.", 192, 7, 512)
    vit = {"backbone.cls_token": (1, 1, 192), "backbone.pos_embed": (1, 197, 192),
           "backbone.patch_embed.proj.weight": (192, 3, 16, 16), "backbone.patch_embed.proj.bias": (192,),
           "backbone.norm.weight": (192,), "backbone.norm.bias": (192,)}
    for i in range(12):
        vit |= _official_block_keys(f"backbone.blocks.{i}.", 192)
    vit |= _official_head_keys("head.", 192) | _official_thead_keys("transhead.", 192, 14, None)
    ckpt = {
        "student_cnn": fill(cnn, "module."), "teacher_cnn": fill(cnn, "module."),
        "student_vit": fill(vit, "module."), "teacher_vit": fill(vit, ""),
        "optimizer_cnn": {"state": {}, "param_groups": []}, "optimizer_vit": {"state": {}, "param_groups": []},
        "epoch": 3, "arch_cnn": "resnet18", "arch_vit": "vit_tiny",
    }
    for name in ("loss_cnn_fn", "loss_vit_fn", "loss_cnn_ct_fn", "loss_vit_ct_fn", "loss_cnn_thead_fn", "loss_vit_thead_fn"):
        ckpt[name] = {"center": torch.randn(1, OUT_DIM, generator=gen)}
    return ckpt


def test_official_checkpoint_round_trip(tmp_path) -> None:
    official = official_layout()
    path = tmp_path / "mokd_resnet18.vit_tiny_pretrain_exp_temp.pth"
    torch.save(official, path)
    model = MOKD(small_config(out_dim=OUT_DIM))
    rest = model.load_official_checkpoint(path)
    assert rest["epoch"] == 3 and "optimizer_cnn" in rest
    assert torch.equal(model.students.cnn.backbone.conv1.weight, official["student_cnn"]["module.backbone.conv1.weight"])
    assert torch.equal(model.teachers.vit.backbone.pos_embed, official["teacher_vit"]["backbone.pos_embed"])
    assert torch.equal(model.criterion.centers[2], official["loss_cnn_ct_fn"]["center"][0])
    exported = model.official_state_dict(epoch=3)
    for key in ("student_cnn", "teacher_cnn", "student_vit", "teacher_vit"):
        assert exported[key].keys() == official[key].keys(), key
        for name, tensor in official[key].items():
            assert torch.equal(exported[key][name], tensor), f"{key}/{name}"
    for name in ("loss_cnn_fn", "loss_vit_fn", "loss_cnn_ct_fn", "loss_vit_ct_fn", "loss_cnn_thead_fn", "loss_vit_thead_fn"):
        assert torch.equal(exported[name]["center"], official[name]["center"]), name
    assert (exported["epoch"], exported["arch_cnn"], exported["arch_vit"]) == (3, "resnet18", "vit_tiny")


def test_loaded_weights_give_the_same_outputs_as_their_source() -> None:
    source = MOKD(small_config(out_dim=OUT_DIM))
    target = MOKD(small_config(out_dim=OUT_DIM))
    target.load_official_checkpoint(source.official_state_dict())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(source.teachers.cnn(x), target.teachers.cnn(x)):
        assert torch.equal(a, b)


def _as_official_eval_loads(state_dict: dict) -> dict:
    """What the official eval_linear.py / eval_knn.py do to a checkpoint entry before loading."""
    state_dict = {k.replace("module.", ""): v for k, v in state_dict.items()}
    return {k.replace("backbone.", ""): v for k, v in state_dict.items()}


def test_export_loads_into_the_official_eval_models() -> None:
    model = MOKD(small_config(out_dim=OUT_DIM))
    exported = model.official_state_dict()
    resnet = torchvision.models.resnet18()
    resnet.fc = torch.nn.Identity()
    msg = resnet.load_state_dict(_as_official_eval_loads(exported["teacher_cnn"]), strict=False)
    assert msg.missing_keys == []
    assert torch.equal(resnet.conv1.weight, model.teachers.cnn.backbone.conv1.weight)
    # The official eval ViT has exactly these module names (cls_token, pos_embed, patch_embed.proj,
    # blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}, norm) and no others with weights.
    vit = VisionTransformer(patch_size=16, embed_dim=192, depth=12, num_heads=3, qkv_bias=True, num_classes=0)
    msg = vit.load_state_dict(_as_official_eval_loads(exported["teacher_vit"]), strict=False)
    assert msg.missing_keys == []
    assert torch.equal(vit.cls_token, model.teachers.vit.backbone.cls_token)


def test_new_style_weight_norm_keys_are_accepted() -> None:
    official = official_layout()
    for key in ("student_cnn", "teacher_cnn", "student_vit", "teacher_vit"):
        state = official[key]
        for name in [k for k in state if k.endswith("last_layer.weight_g")]:
            base = name.removesuffix("weight_g")
            state[base + "parametrizations.weight.original0"] = state.pop(name)
            state[base + "parametrizations.weight.original1"] = state.pop(base + "weight_v")
    model = MOKD(small_config(out_dim=OUT_DIM))
    model.load_official_checkpoint(official)
    assert torch.equal(
        model.students.vit.head.last_layer.weight_v,
        official["student_vit"]["module.head.last_layer.parametrizations.weight.original1"],
    )


def test_checkpoint_from_another_architecture_is_refused() -> None:
    official = official_layout()
    model = MOKD(small_config(arch_cnn="resnet34", out_dim=OUT_DIM))
    with pytest.raises(ValueError, match=r"arch_cnn='resnet18' but this model has arch_cnn='resnet34'"):
        model.load_official_checkpoint(official)
    official.pop("arch_cnn")  # without the arch field the key/shape check still catches it
    with pytest.raises(ValueError, match=r"student_cnn.*does not match resnet34: missing \['backbone.layer1.2"):
        model.load_official_checkpoint(official)


def test_out_dim_mismatch_and_missing_models_are_named() -> None:
    model = MOKD(small_config(out_dim=128))
    with pytest.raises(ValueError, match=r"has shape \(256, 1\) but this model expects \(128, 1\).*out_dim=128"):
        model.load_official_checkpoint(official_layout())
    with pytest.raises(ValueError, match=r"lacks \['teacher_vit'\].*Keys present"):
        model.load_official_checkpoint({k: v for k, v in official_layout().items() if k != "teacher_vit"})
