"""Shared fixtures: small configurations that keep the suite fast on a 2-core CPU."""

import pytest
import torch

from mokd_fast import MOKDConfig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TORCH_THREADS = torch.get_num_threads()  # before any test: what a fresh process (a subprocess run) gets


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """FFCV sets torch's thread count when imported and from its loader threads; every test starts and
    ends with the count of a fresh process, so results (bitwise resume comparisons against a
    subprocess) never depend on which tests ran before."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


def small_config(**overrides: object) -> MOKDConfig:
    """resnet18 + vit_tiny at 64/32 crops: the real architectures, small inputs."""
    values: dict[str, object] = dict(
        arch_cnn="resnet18",
        arch_vit="vit_tiny",
        out_dim=256,
        local_crops_number=2,
        global_size=64,
        local_size=32,
        epochs=10,
        warmup_teacher_temp_epochs_cnn=5,
        warmup_teacher_temp_epochs_vit=3,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
    )
    values.update(overrides)
    return MOKDConfig(**values)


def random_crops(cfg: MOKDConfig, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """2 global then L local random crops ``[B, 3, S, S]``."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [cfg.global_size] * 2 + [cfg.local_size] * cfg.local_crops_number
    return [torch.randn(batch, 3, s, s, generator=gen) for s in sizes]


# Flags of a tiny but real run: resnet18 + vit_tiny, 64/32 crops, 4 images per step.
TINY_RUN_FLAGS = [
    "--arch_cnn", "resnet18", "--arch_vit", "vit_tiny", "--out_dim", "256",
    "--global_size", "64", "--local_size", "32", "--input_size", "64", "--local_crops_number", "2",
    "--epochs", "2", "--warmup_teacher_temp_epochs_cnn", "1", "--warmup_teacher_temp_epochs_vit", "1",
    "--warmup_epochs", "1", "--batch_size_per_gpu", "4", "--num_workers", "1", "--log_every", "1",
    "--ckpt_every_steps", "0", "--device", "cpu",
]


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory):
    """An ImageFolder of 16 real JPEGs (4 classes x 4), 4 steps per epoch at batch 4."""
    from mokd_fast.sample_data.photos import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("photos"), images_per_class=4, classes=4)


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory):
    """train/ (4 classes x 4) and val/ (4 classes x 2, other crops) ImageFolders of real JPEGs."""
    from mokd_fast.sample_data.photos import write_image_folder

    root = tmp_path_factory.mktemp("labelled")
    write_image_folder(root / "train", images_per_class=4, classes=4, seed=0)
    write_image_folder(root / "val", images_per_class=2, classes=4, seed=1)
    return root


@pytest.fixture(scope="session")
def converted_folders(labelled_folder, tmp_path_factory: pytest.TempPathFactory):
    """``{format: root}``: ``labelled_folder`` as given and converted to FFCV and to DALI shards."""
    from mokd_fast.convert.cli import main as convert_main

    roots = {"imagefolder": labelled_folder}
    for fmt in ("ffcv", "dali"):
        root = tmp_path_factory.mktemp(fmt)
        for split in ("train", "val"):
            assert convert_main([str(labelled_folder / split), str(root / split), "--format", fmt, "--workers", "1",
                                 "--shard-size", "5"]) == 0
        roots[fmt] = root
    return roots


RUN_FLAGS = ["--batch_size_per_gpu", "4", "--num_workers", "1", "--log_every", "1", "--ckpt_every_steps", "0",
             "--device", "cpu", "--tensorboard", "False"]
METHOD_NAMES = ("mokd", "dogo", "seed", "mcl", "lmcl")


def method_flags(method: str, data, teacher) -> list[str]:
    """A tiny but real run of ``method`` on ``data`` (4 steps per epoch); SEED distils ``teacher``."""
    flags = {
        "mokd": [*TINY_RUN_FLAGS, "--tensorboard", "False"],
        "dogo": ["--method", "dogo", "--image_size", "32", "--n_proj_1", "32", "--epochs", "2", *RUN_FLAGS],
        "seed": ["--method", "seed", "--teacher", str(teacher), "--student_arch", "resnet18", "--global_size", "32",
                 "--local_crops_number", "2", "--local_size", "16", "--queue_size", "24", "--epochs", "2", *RUN_FLAGS],
        "mcl": ["--method", "mcl", "--archs", "resnet18", "resnet18", "--global_size", "32", "--queue_size", "24",
                "--epochs", "2", *RUN_FLAGS],
        "lmcl": ["--method", "lmcl", "--image_size", "32", "--neg_k", "8", "--epochs", "2", "--pipeline",
                 "torchvision", *RUN_FLAGS],
    }[method]
    return [*flags, "--data_path", str(data)]


def moco_v2_teacher(path):
    """An official-layout MoCo v2 checkpoint: epoch, arch, the query/key encoders and an SGD state (seed 0)."""
    import torch.nn as nn
    import torchvision.models as tvm

    torch.manual_seed(0)
    net = tvm.resnet18(num_classes=128)
    net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), net.fc)
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    state = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items()}
    state |= {f"module.encoder_k.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": opt.state_dict()}, path)
    return path


def train_each_method(data, root) -> dict:
    """``{method: checkpoint.pth}`` after one step of each method on ``data``, plus ``moco``, SEED's teacher file."""
    from mokd_fast.cli import main as train_main

    root.mkdir(parents=True, exist_ok=True)
    files = {"moco": moco_v2_teacher(root / "moco_v2.pth.tar")}
    for method in METHOD_NAMES:
        out = root / method
        assert train_main([*method_flags(method, data, files["moco"]), "--output_dir", str(out), "--max_steps", "1"]) == 0
        files[method] = out / "checkpoint.pth"
    return files


@pytest.fixture(scope="session")
def method_runs(photo_folder, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``train_each_method`` on ``photo_folder``: one fresh checkpoint of every method."""
    return train_each_method(photo_folder, tmp_path_factory.mktemp("method_runs"))
