"""Backbones out of training checkpoints, exports that timm and torchvision load, and the errors."""

import json

import pytest
import timm
import torch
import torchvision.models as tvm
from torch import nn

from mokd_fast import MOKD
from mokd_fast.core.errors import UsageError
from mokd_fast.eval.cli import linear_main
from mokd_fast.eval.export import export
from mokd_fast.eval.features import FeatureNet
from mokd_fast.methods.mokd.official import export_official
from mokd_fast.models.features import cnn_pooled
from mokd_fast.models.vit import vit_tokens
from mokd_fast.models.weights import load_backbone
from tests.conftest import small_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A MOKD (resnet18 + vit_tiny/16) saved in the official layout, and the model itself."""
    torch.manual_seed(0)
    model = MOKD(small_config())
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save(export_official(model, epoch=3), path)
    return model, path


def test_each_key_loads_its_own_backbone(trained):
    model, path = trained
    x = torch.randn(2, 3, 64, 64)
    for key, branch in (("teacher_cnn", model.teachers.cnn), ("student_vit", model.students.vit)):
        loaded = load_backbone(path, key, None)
        assert loaded.epoch == 3 and loaded.arch == ("resnet18" if "cnn" in key else "vit_tiny")
        branch.backbone.eval()
        want = cnn_pooled(branch.backbone, x) if "cnn" in key else vit_tokens(branch.backbone, x)[0]
        torch.testing.assert_close(FeatureNet(loaded)(x), want)


def test_bad_key_architecture_and_patch_size_are_named(trained, tmp_path):
    _, path = trained
    with pytest.raises(UsageError, match=r"no state dict under --checkpoint_key 'teacher'.*'student_cnn'"):
        load_backbone(path, "teacher", None)
    with pytest.raises(UsageError, match="trained as 'resnet18' but --arch is 'resnet50'"):
        load_backbone(path, "teacher_cnn", "resnet50")
    with pytest.raises(UsageError, match="16x16 patches but --patch_size is 8"):
        load_backbone(path, "teacher_vit", None, patch_size=8)
    bare = tmp_path / "bare.pth"
    torch.save(tvm.resnet18().state_dict(), bare)
    with pytest.raises(UsageError, match="does not fit 'resnet50'"):
        load_backbone(bare, None, "resnet50")
    with pytest.raises(UsageError, match="does not record its architecture; pass --arch"):
        load_backbone(bare, None, None)
    assert load_backbone(bare, None, "resnet18").kind == "cnn"  # a torchvision classifier: fc.* dropped


def test_timm_and_torchvision_exports_load_strictly_and_compute_the_same(trained, tmp_path):
    _, path = trained
    x = torch.randn(2, 3, 64, 64)
    cnn = FeatureNet(load_backbone(path, "teacher_cnn", None))(x)
    # At 224 no position embedding is resampled (timm and DINO resample other sizes differently).
    x224 = torch.randn(2, 3, 224, 224)
    vit = FeatureNet(load_backbone(path, "teacher_vit", None))(x224)
    export(str(path), "teacher_cnn", "timm", str(tmp_path / "r18.safetensors"))
    net = timm.create_model("resnet18", pretrained=True, num_classes=0,
                            pretrained_cfg_overlay=dict(file=str(tmp_path / "r18.safetensors"))).eval()
    torch.testing.assert_close(net(x), cnn)
    export(str(path), "teacher_vit", "timm", str(tmp_path / "vit.pth"))
    net = timm.create_model("vit_tiny_patch16_224", num_classes=0).eval()
    assert not net.load_state_dict(torch.load(tmp_path / "vit.pth")).missing_keys
    torch.testing.assert_close(net(x224), vit)
    export(str(path), "teacher_cnn", "torchvision", str(tmp_path / "tv.pth"))
    net = tvm.resnet18()
    net.fc = nn.Identity()
    net.load_state_dict(torch.load(tmp_path / "tv.pth"))
    torch.testing.assert_close(net.eval()(x), cnn)
    with pytest.raises(UsageError, match="not a torchvision architecture"):
        export(str(path), "teacher_vit", "torchvision", str(tmp_path / "no.pth"))


def test_official_export_is_backbone_only_and_reloads(trained, tmp_path):
    _, path = trained
    export(str(path), "teacher_vit", "official", str(tmp_path / "official.pth"))
    saved = torch.load(tmp_path / "official.pth")
    assert set(saved) == {"teacher_vit", "epoch", "arch_vit"}
    assert all(k.startswith("backbone.") for k in saved["teacher_vit"])
    assert load_backbone(tmp_path / "official.pth", "teacher_vit", None).arch == "vit_tiny"


def test_linear_probe_learns_and_resumes(trained, labelled_folder, tmp_path):
    _, path = trained
    flags = ["--pretrained_weights", str(path), "--checkpoint_key", "teacher_vit", "--data_path", str(labelled_folder),
             "--input_size", "32", "--n_last_blocks", "2", "--avgpool_patchtokens", "1", "--num_workers", "1",
             "--batch_size_per_gpu", "8", "--lr", "2.0", "--val_freq", "1", "--output_dir", str(tmp_path)]
    assert linear_main([*flags, "--epochs", "4", "--cached_features"]) == 0
    log = [json.loads(line) for line in (tmp_path / "linear_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3] and log[-1]["train_loss"] < log[0]["train_loss"]
    result = json.loads((tmp_path / "linear.json").read_text())
    assert result["feature_dim"] == 3 * 192 and 0 <= result["top1"] <= 100
    assert linear_main([*flags, "--epochs", "4", "--cached_features"]) == 0  # resumes at the end: nothing to do
    assert len((tmp_path / "linear_log.jsonl").read_text().splitlines()) == 4
    assert linear_main([*flags, "--epochs", "1", "--output_dir", str(tmp_path / "images")]) == 0  # official: crops


def test_linear_probe_refuses_another_runs_classifier(trained, labelled_folder, tmp_path, capsys):
    _, path = trained
    flags = ["--pretrained_weights", str(path), "--data_path", str(labelled_folder), "--input_size", "32",
             "--num_workers", "1", "--epochs", "1", "--cached_features", "--output_dir", str(tmp_path)]
    assert linear_main(flags) == 0
    assert linear_main([*flags, "--lr", "0.1"]) == 2
    assert "belongs to another evaluation" in capsys.readouterr().err
