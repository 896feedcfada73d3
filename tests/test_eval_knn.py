"""k-NN evaluation: DINO's voting, the tool end to end, feature dumps, and 2-process extraction."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mokd_fast.eval.cli import knn_main
from mokd_fast.eval.knn import knn_classify
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def _official_knn(train_f, train_y, test_f, test_y, k, temperature, num_classes):
    """The official algorithm written plainly: one test sample at a time, one-hot votes."""
    top1 = top5 = 0
    for f, y in zip(test_f, test_y):
        sim, idx = (train_f @ f).topk(k)
        one_hot = F.one_hot(train_y[idx], num_classes).float()  # [k, C]
        probs = (one_hot * (sim / temperature).exp()[:, None]).sum(0)
        order = probs.argsort(descending=True)
        top1 += int(order[0] == y)
        top5 += int(y in order[: min(5, k)] and probs[y] > 0)
    return 100 * top1 / len(test_y), 100 * top5 / len(test_y)


@pytest.mark.parametrize("num_classes", [3, 7])
def test_weighted_voting_matches_the_official_algorithm(num_classes):
    gen = torch.Generator().manual_seed(num_classes)
    train_f = F.normalize(torch.randn(200, 16, generator=gen, dtype=torch.float64), dim=1)
    test_f = F.normalize(torch.randn(50, 16, generator=gen, dtype=torch.float64), dim=1)
    train_y = torch.randint(num_classes, (200,), generator=gen)
    test_y = torch.randint(num_classes, (50,), generator=gen)
    ours = knn_classify(train_f, train_y, test_f, test_y, [1, 4, 20], 0.07, num_classes, chunk_elements=2000)
    for k, (top1, top5) in ours.items():
        want1, want5 = _official_knn(train_f, train_y, test_f, test_y, k, 0.07, num_classes)
        assert top1 == pytest.approx(want1) and top5 == pytest.approx(want5), k


def test_eval_knn_end_to_end_with_feature_dump(labelled_folder, tmp_path, capsys):
    common = ["--arch", "resnet18", "--data_path", str(labelled_folder), "--input_size", "32", "--num_workers", "1",
              "--nb_knn", "1", "5", "20", "--batch_size_per_gpu", "5"]
    assert knn_main([*common, "--output_dir", str(tmp_path / "a"), "--dump_features", str(tmp_path / "f")]) == 0
    first = json.loads((tmp_path / "a/knn.json").read_text())
    assert first["train_images"] == 16 and first["val_images"] == 8 and first["arch"] == "resnet18"
    assert set(first["results"]) == {"1", "5"}  # k=20 exceeds the 16 training images: skipped, said so
    assert "skipping k > 16" in capsys.readouterr().out
    assert torch.load(tmp_path / "f/trainfeat.pth").shape == (16, 512)
    assert knn_main([*common, "--output_dir", str(tmp_path / "b"), "--load_features", str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "b/knn.json").read_text())["results"] == first["results"]


@pytest.mark.parametrize("fmt", ["imagefolder", "dali"])
def test_two_processes_extract_the_features_of_one(converted_folders, tmp_path, fmt):
    flags = ["--arch", "resnet18", "--data_path", str(converted_folders[fmt]), "--input_size", "32",
             "--num_workers", "1", "--nb_knn", "3", "--batch_size_per_gpu", "3", "--device", "cpu"]
    assert knn_main([*flags, "--output_dir", str(tmp_path), "--dump_features", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "tools/eval_knn.py"), *flags, "--output_dir", str(tmp_path), "--dump_features", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("trainfeat.pth", "testfeat.pth", "trainlabels.pth", "testlabels.pth"):
        one, two = torch.load(tmp_path / "one" / name), torch.load(tmp_path / "two" / name)
        assert torch.allclose(one, two, atol=1e-5), name


def test_periodic_knn_is_logged_and_matches_the_tool_on_the_checkpoint(photo_folder, labelled_folder, tmp_path):
    from mokd_fast.cli import main as train_main
    from tests.conftest import TINY_RUN_FLAGS

    out = tmp_path / "run"
    assert train_main([*TINY_RUN_FLAGS, "--data_path", str(photo_folder), "--output_dir", str(out), "--tensorboard",
                       "False", "--knn_every", "2", "--knn_data", str(labelled_folder), "--knn_k", "5"]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    knn = [r for r in records if "knn_cnn_top1" in r]
    assert [r["step"] for r in knn] == [0, 8]  # the random initialisation, then after epoch 1 (every 2 epochs)
    for key in ("cnn", "vit"):
        assert knn_main(["--pretrained_weights", str(out / "checkpoint.pth"), "--checkpoint_key", f"teacher_{key}",
                         "--data_path", str(labelled_folder), "--input_size", "64", "--nb_knn", "5", "--num_workers", "1",
                         "--output_dir", str(tmp_path / key)]) == 0
        tool = json.loads((tmp_path / key / "knn.json").read_text())["results"]["5"]
        assert tool["top1"] == pytest.approx(knn[-1][f"knn_{key}_top1"])
        assert tool["top5"] == pytest.approx(knn[-1][f"knn_{key}_top5"])


def test_knn_every_without_data_is_refused(photo_folder, tmp_path, capsys):
    from mokd_fast.cli import main as train_main
    from tests.conftest import TINY_RUN_FLAGS

    status = train_main([*TINY_RUN_FLAGS, "--data_path", str(photo_folder), "--output_dir", str(tmp_path),
                         "--knn_every", "1"])
    assert status != 0 and "--knn_every needs --knn_data" in capsys.readouterr().err


def test_refreshed_batchnorm_is_the_split_statistics_on_a_copy(labelled_folder) -> None:
    """``--knn_bn refresh``: the copy's first BatchNorm holds the mean and (unbiased) variance of its input over
    the whole train split (one batch here, so exactly), and the network the run trains keeps its buffers."""
    import torchvision.models as tvm

    from mokd_fast.eval.bn_refresh import with_fresh_batchnorm
    from mokd_fast.eval.data import open_split, split_batches
    from mokd_fast.eval.extract import ExtractSettings
    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.models.weights import LoadedBackbone

    torch.manual_seed(0)
    backbone = tvm.resnet18()
    backbone.fc = torch.nn.Identity()
    backbone.eval()
    net = FeatureNet(LoadedBackbone(backbone, "cnn", "cnn", 0, None))
    split = open_split(labelled_folder / "train")
    settings = ExtractSettings(32, 37, 64, 0, bf16=False, channels_last=False)
    fresh = with_fresh_batchnorm(net, split, settings, torch.device("cpu"))
    assert torch.equal(backbone.bn1.running_mean, torch.zeros(64))
    assert torch.equal(backbone.bn1.running_var, torch.ones(64))
    images, _, index = next(split_batches(split, 32, 37, False, 64, 0, 1, torch.device("cpu"), 0))
    images = images[index >= 0]  # all 16 images, without the padding
    assert len(images) == 16
    with torch.no_grad():
        conv = backbone.conv1(images)  # [16, 64, 16, 16]
    torch.testing.assert_close(fresh.backbone.bn1.running_mean, conv.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fresh.backbone.bn1.running_var, conv.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4,
                               atol=1e-6)
    assert not fresh.backbone.training and not fresh.backbone.bn1.training
    with torch.no_grad():
        assert not torch.allclose(fresh(images), net(images))  # the features do change
