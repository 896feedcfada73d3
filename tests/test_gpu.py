"""CUDA checks: the same step under bf16 autocast stays finite and close to fp32 (skipped without a GPU)."""

import pytest
import torch

from mokd_fast import LOSS_TERMS, MOKD
from tests.conftest import random_crops, small_config


@pytest.mark.gpu
def test_cuda_step_bf16_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = MOKD(small_config(drop_path_rate=0.0)).cuda()
    crops = [c.cuda() for c in random_crops(model.cfg, batch=4)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fp32 = model.loss_terms(crops, 0)
    model.load_state_dict(state)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = model.loss_terms(crops, 0)
    for name in LOSS_TERMS:
        assert bf16[name].dtype == torch.float32, "losses must be computed in fp32"
        assert torch.isfinite(bf16[name])
        assert abs(bf16[name].item() - fp32[name].item()) <= 0.05 * abs(fp32[name].item()) + 0.05, name
    model.backward(bf16)
    assert all(torch.isfinite(p.grad).all() for p in model.students.parameters() if p.grad is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_training_run_resumes_exactly(precision, photo_folder, tmp_path) -> None:
    """train.py on CUDA: the pinned, non-blocking pipeline, autocast, scalers, and a mid-epoch resume."""
    from mokd_fast.cli import main
    from tests.conftest import TINY_RUN_FLAGS

    flags = [*TINY_RUN_FLAGS, "--device", "cuda", "--precision", precision, "--data_path", str(photo_folder),
             "--tensorboard", "False"]
    assert main([*flags, "--output_dir", str(tmp_path / "a"), "--max_steps", "6"]) == 0
    assert main([*flags, "--output_dir", str(tmp_path / "b"), "--max_steps", "3"]) == 0
    assert main([*flags, "--output_dir", str(tmp_path / "b"), "--max_steps", "6",
                 "--resume", str(tmp_path / "b" / "checkpoint.pth")]) == 0
    a = torch.load(tmp_path / "a" / "checkpoint.pth")
    b = torch.load(tmp_path / "b" / "checkpoint.pth")
    # cuDNN autotuning may pick different kernels per process, so exact equality is not promised on GPU.
    for key in ("student_cnn", "teacher_vit"):
        for name, value in a[key].items():
            if value.is_floating_point():
                torch.testing.assert_close(value, b[key][name], rtol=1e-3, atol=1e-3, msg=f"{key}.{name}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["dali", "ffcv", "torchvision", "nvjpeg"])
def test_cuda_pipelines_deliver_on_the_device(backend, photo_folder, tmp_path) -> None:
    """nvJPEG decode (DALI, nvjpeg) and device-side views (FFCV, nvjpeg) hand CUDA tensors to the step."""
    from mokd_fast.convert.cli import main as convert_main
    from pipelines import PIPELINES, MultiCropPolicy

    data = {"torchvision": photo_folder, "dali": tmp_path / "dali", "nvjpeg": tmp_path / "dali",
            "ffcv": tmp_path / "ffcv" / "train.beton"}[backend]
    if backend != "torchvision":
        fmt = "ffcv" if backend == "ffcv" else "dali"  # nvjpeg reads a dali conversion
        assert convert_main([str(photo_folder), str(data if fmt == "dali" else data.parent), "--format", fmt]) == 0
    policy = MultiCropPolicy.mokd(64, 32, (0.25, 1.0), (0.05, 0.25), 2)
    device = torch.device("cuda", 0)
    pipe = PIPELINES[backend](data, policy, 4, 1, 0, 0, 2, device)
    batches = list(pipe.epoch(0))
    assert len(batches) == len(pipe) == 4
    for batch in batches:
        assert batch.global_crops.device == device and batch.local_crops.device == device
        assert batch.global_crops.shape == (8, 3, 64, 64) and batch.local_crops.shape == (8, 3, 32, 32)
        assert torch.isfinite(batch.global_crops).all() and batch.labels.device == device


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny"])
def test_cuda_knn_features_bf16_match_cpu_fp32(arch, labelled_folder, tmp_path) -> None:
    """eval_knn on CUDA (bf16 autocast, channels-last CNN) extracts the features the CPU fp32 path does."""
    from mokd_fast.eval.cli import knn_main

    common = ["--arch", arch, "--data_path", str(labelled_folder), "--input_size", "64", "--batch_size_per_gpu", "8",
              "--num_workers", "1", "--nb_knn", "1", "4"]
    for device in ("cpu", "cuda"):
        assert knn_main([*common, "--device", device, "--output_dir", str(tmp_path / device),
                         "--dump_features", str(tmp_path / device / "f")]) == 0
    cpu = torch.load(tmp_path / "cpu" / "f" / "trainfeat.pth")  # [16, D] float32
    gpu = torch.load(tmp_path / "cuda" / "f" / "trainfeat.pth")
    assert gpu.dtype == torch.float32 and gpu.shape == cpu.shape
    cosine = torch.nn.functional.cosine_similarity(cpu.double(), gpu.double(), dim=1)
    assert cosine.min() > 0.99, cosine
    for name in ("trainlabels.pth", "testlabels.pth"):
        assert torch.equal(torch.load(tmp_path / "cpu" / "f" / name), torch.load(tmp_path / "cuda" / "f" / name))
