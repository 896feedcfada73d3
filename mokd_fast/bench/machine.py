"""What a machine is, for benchmark records: devices, driver, library versions, matmul rates, free memory.

Every optional library is reported as its version or as ``missing: <why>`` (the import error), so a
record taken on a machine without DALI or FFCV says so instead of failing.
"""

import importlib
import os
import platform
import shutil
import subprocess
from importlib import metadata

import torch

from mokd_fast.bench.timing import matmul_peak_flops


def library_version(module: str) -> str:
    """``module``'s installed version, or ``missing: <import error>``."""
    try:
        imported = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 (a broken install reports as missing, with its error)
        return f"missing: {type(err).__name__}: {err}"
    try:  # the installed distribution first: FFCV 1.0.2's __version__ still says 0.0.3rc1
        return metadata.version(module.split(".")[0])
    except metadata.PackageNotFoundError:
        return str(getattr(imported, "__version__", "unknown version"))


def _driver_version() -> str:
    """The NVIDIA driver release from ``nvidia-smi`` (``unknown`` without it)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "unknown (no nvidia-smi)"
    result = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                            text=True, timeout=30)
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else "unknown"


def _nvjpeg_check(device: torch.device) -> str:
    """Decodes a tiny JPEG with torchvision on ``device``: ``ok`` or the error."""
    from torchvision.io import decode_jpeg, encode_jpeg

    try:
        data = encode_jpeg(torch.zeros(3, 16, 16, dtype=torch.uint8))
        decode_jpeg(data, device=device)
        return "ok"
    except Exception as err:  # noqa: BLE001 (reported, not raised: the record says what does not work)
        return f"failed: {type(err).__name__}: {err}"


def machine_report(device: torch.device) -> dict:
    """The machine facts a benchmark figure depends on, measured where measuring is cheap (seconds)."""
    cuda = device.type == "cuda"
    report = {
        "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torchvision": library_version("torchvision"), "timm": library_version("timm"),
        "numpy": library_version("numpy"),
        "dali": library_version("nvidia.dali"), "ffcv": library_version("ffcv"),
        "device": str(device), "torchvision_decode_jpeg": _nvjpeg_check(device),
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        report.update(
            device_name=props.name, device_count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}",
            driver=_driver_version(), memory_total_gib=round(total / 2**30, 1), memory_free_gib=round(free / 2**30, 1),
            bf16_matmul_tflops=round(matmul_peak_flops(device, torch.bfloat16) / 1e12, 1),
            fp32_matmul_tflops=round(matmul_peak_flops(device, torch.float32) / 1e12, 1),
        )
    else:
        report.update(device_name=platform.processor() or "cpu", device_count=0,
                      fp32_matmul_tflops=round(matmul_peak_flops(device, torch.float32) / 1e12, 3))
    return report
