"""SEED's teacher: every checkpoint format loads to the network it came from, frozen; bad files are named."""

import pytest
import timm
import torch
import torch.nn as nn
import torchvision.models as tvm

from mokd_fast.core.errors import UsageError
from mokd_fast.methods.mokd.config import MOKDConfig
from mokd_fast.methods.mokd.method import MOKD
from mokd_fast.methods.seed.config import SEEDConfig
from mokd_fast.methods.seed.swav_resnet import swav_resnet50
from mokd_fast.methods.seed.teacher_load import (
    detect_format,
    load_teacher,
    mlp_from_state,
)
from mokd_fast.models.vit import vit_tokens

SIZE = 64


def _images(n: int = 3, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is told apart from train mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _teacher(path, **kw):
    return load_teacher(SEEDConfig(teacher=str(path), **kw))


@pytest.mark.parametrize("layers", [
    [nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)],  # MoCo v2's fc
    [nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)],  # SwAV's projection head
    [nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4)],  # DINO's MLP
    [nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)],  # DoGo's SimCLR head
])
def test_an_mlp_is_rebuilt_from_its_weights(layers) -> None:
    ref = nn.Sequential(*layers)
    _randomise_bn(ref)
    activation = type(next(m for m in layers if isinstance(m, (nn.ReLU, nn.GELU))))
    got = mlp_from_state(ref.state_dict(), activation)
    assert [type(m) for m in got] == [type(m) for m in ref]
    x = torch.randn(5, 8)
    torch.testing.assert_close(got.eval()(x), ref.eval()(x), rtol=0, atol=0)


def _moco_checkpoint(arch: str = "resnet18") -> tuple[dict, nn.Module]:
    """An official-layout MoCo v2 checkpoint: query and key encoders with the MLP fc, the queue, the optimiser."""
    torch.manual_seed(0)
    net = getattr(tvm, arch)(num_classes=128)
    width = net.fc.weight.shape[1]
    net.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), net.fc)
    _randomise_bn(net)
    state = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    state |= {f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in net.state_dict().items()}
    state |= {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {}}, net.eval()


def test_a_moco_checkpoint_gives_the_query_encoder_and_its_mlp(tmp_path) -> None:
    ckpt, ref = _moco_checkpoint()
    torch.save(ckpt, tmp_path / "moco.pth.tar")
    assert detect_format(ckpt) == "moco"
    teacher = _teacher(tmp_path / "moco.pth.tar")
    assert teacher.dim == 128 and "MoCo resnet18" in teacher.source
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), ref(x))
    pooled = _teacher(tmp_path / "moco.pth.tar", teacher_embedding="backbone")
    assert pooled.dim == 512


def test_a_moco_checkpoint_of_another_depth_names_its_keys(tmp_path) -> None:
    ckpt, _ = _moco_checkpoint("resnet34")
    torch.save(ckpt, tmp_path / "moco.pth.tar")
    with pytest.raises(UsageError, match=r"does not fit MoCo resnet18: .*unexpected \['layer1\.2"):
        _teacher(tmp_path / "moco.pth.tar", teacher_arch="resnet18")


class _OfficialSwAVStem(nn.Module):
    """SwAV's stem as its code writes it: zero padding of 1, then a 7x7 convolution with padding 2."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.pad = nn.ConstantPad2d(1, 0.0)
        self.conv = nn.Conv2d(3, conv.out_channels, 7, stride=2, padding=2, bias=False)
        self.conv.weight.data.copy_(conv.weight.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


def test_a_swav_checkpoint_gives_the_backbone_and_projection_without_prototypes(tmp_path) -> None:
    torch.manual_seed(0)
    net = swav_resnet50(1)
    _randomise_bn(net)
    head = nn.Sequential(nn.Linear(2048, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
    _randomise_bn(head, seed=1)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state |= {f"module.projection_head.{k}": v for k, v in head.state_dict().items()}
    state["module.prototypes.weight"] = torch.randn(100, 32)
    torch.save(state, tmp_path / "swav.pth.tar")
    assert detect_format(state) == "swav"
    teacher = _teacher(tmp_path / "swav.pth.tar")
    assert teacher.dim == 32 and "SwAV resnet50 + projection" in teacher.source
    reference = nn.Sequential(_OfficialSwAVStem(net.conv1), *list(net.children())[1:-1], nn.Flatten(), head).eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), reference(x))


def test_swav_widths_have_the_official_shapes() -> None:
    """SwAV's ResNet-50w2: a 128-channel stem, every stage's planes doubled (torchvision's wide ResNet differs)."""
    shapes = {k: tuple(v.shape) for k, v in swav_resnet50(2).state_dict().items()}
    assert shapes["conv1.weight"] == (128, 3, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (128, 128, 1, 1)
    assert shapes["layer1.0.conv3.weight"] == (512, 128, 1, 1)
    assert shapes["layer4.2.conv3.weight"] == (4096, 1024, 1, 1)
    with pytest.raises(ValueError, match="widths"):
        swav_resnet50(3)


@pytest.fixture(scope="module")
def mokd_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MOKD(MOKDConfig(arch_cnn="resnet18", arch_vit="vit_tiny", out_dim=64, global_size=SIZE, local_size=32,
                            input_size=SIZE, local_crops_number=2))
    _randomise_bn(model.teachers.cnn)
    path = tmp_path_factory.mktemp("mokd") / "checkpoint.pth"
    torch.save(model.checkpoint_state() | {"epoch": 3}, path)
    return path, model


def test_our_mokd_teacher_gives_the_dino_head_bottleneck(mokd_checkpoint) -> None:
    path, model = mokd_checkpoint
    x = _images()
    cnn = _teacher(path, teacher_key="teacher_cnn")
    branch = model.teachers.cnn.eval()
    with torch.no_grad():
        torch.testing.assert_close(cnn(x), branch.head.mlp(branch.backbone(x)))
    assert cnn.dim == 256 and "resnet18 (teacher_cnn) + head (256-d)" in cnn.source
    vit = _teacher(path, teacher_key="teacher_vit")
    with torch.no_grad():
        torch.testing.assert_close(vit(x), model.teachers.vit.head.mlp(vit_tokens(model.teachers.vit.backbone, x)[0]))
    pooled = _teacher(path, teacher_key="teacher_cnn", teacher_embedding="backbone")
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), branch.backbone(x))


def test_our_checkpoint_needs_a_key_and_says_which(mokd_checkpoint) -> None:
    path, _ = mokd_checkpoint
    with pytest.raises(UsageError, match=r"several state dicts .*teacher_cnn.*--teacher_key"):
        _teacher(path)
    with pytest.raises(UsageError, match="trained as 'resnet18' but --teacher_arch is 'resnet50'"):
        _teacher(path, teacher_key="teacher_cnn", teacher_arch="resnet50")


def test_a_timm_state_dict_gives_the_pooled_feature(tmp_path) -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet10t")
    _randomise_bn(net)
    torch.save(net.state_dict(), tmp_path / "resnet10t.pth")
    with pytest.raises(UsageError, match="--teacher_arch"):
        _teacher(tmp_path / "resnet10t.pth")
    teacher = _teacher(tmp_path / "resnet10t.pth", teacher_arch="resnet10t")
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), net.eval().forward_features(x).mean(dim=(2, 3)))
    with pytest.raises(UsageError, match=r"does not fit 'resnet18'"):
        _teacher(tmp_path / "resnet10t.pth", teacher_arch="resnet18")


def test_the_teacher_is_frozen_in_eval_mode_and_embeds_in_fp32(tmp_path) -> None:
    ckpt, ref = _moco_checkpoint()
    torch.save(ckpt, tmp_path / "moco.pth.tar")
    teacher = _teacher(tmp_path / "moco.pth.tar")
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(_images())
    assert out.dtype == torch.float32 and not out.requires_grad
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN statistics untouched


def test_bad_teacher_files_are_named(tmp_path) -> None:
    with pytest.raises(UsageError, match="--teacher .*missing.pth: no such file"):
        _teacher(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UsageError, match="--teacher .*junk.pth: is a text file, not a torch checkpoint"):
        _teacher(tmp_path / "junk.pth")
    with pytest.raises(UsageError, match="--teacher: give the teacher's checkpoint"):
        load_teacher(SEEDConfig())
