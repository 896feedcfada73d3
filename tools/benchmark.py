#!/usr/bin/env python
"""Benchmarks (never tests): ``python tools/benchmark.py convert ...``.

``convert``: images/s of tools/convert_dataset.py for each format and worker count, over a folder of
ImageNet-sized JPEGs made from the photographs bundled with scikit-image, and the output sizes.
Writes a JSON record (command, machine, date, figures).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.convert.cli import main as convert_main
from mokd_fast.sample_images import PHOTO_NAMES, sample_photos


def imagenet_like_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs (quality 90) sized like ImageNet's (short side 333..500, aspect 3/4..4/3), 10 classes."""
    rng = np.random.default_rng(seed)
    photos = list(sample_photos().values())
    for i in range(n):
        photo = photos[i % len(photos)]
        short = int(rng.integers(333, 501))
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        size = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        crop_w, crop_h = min(photo.width, size[0]), min(photo.height, size[1])
        left, top = int(rng.integers(0, photo.width - crop_w + 1)), int(rng.integers(0, photo.height - crop_h + 1))
        image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BICUBIC)
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{PHOTO_NAMES[i % len(photos)]}_{i:05d}.jpg", quality=90)
    return root


def bench_convert(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mokd_convert_bench_"))
    try:
        src = imagenet_like_folder(work / "src", args.images)
        src_bytes = sum(f.stat().st_size for f in src.rglob("*.jpg"))
        runs = []
        for fmt in args.formats:
            for workers in args.workers:
                out = work / f"{fmt}_{workers}"
                start = time.perf_counter()
                status = convert_main([str(src), str(out), "--format", fmt, "--workers", str(workers)])
                seconds = time.perf_counter() - start
                report = json.loads((out / "report.json").read_text())
                runs.append({"format": fmt, "workers": workers, "status": status, "seconds": round(seconds, 2),
                             "images_per_s": round(args.images / seconds, 1), "output_bytes": report["bytes"],
                             "converted": report["converted"]})
                print(json.dumps(runs[-1]))
                shutil.rmtree(out)
        return {"source_images": args.images, "source_bytes": src_bytes, "runs": runs}
    finally:
        shutil.rmtree(work)


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    conv = sub.add_parser("convert", help="dataset conversion throughput")
    conv.add_argument("--images", type=int, default=2000)
    conv.add_argument("--formats", nargs="+", default=["dali", "ffcv"], choices=["dali", "ffcv"])
    conv.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    conv.add_argument("--json", type=Path, default=None, help="where to write the record")
    args = parser.parse_args()
    figures = bench_convert(args)
    record = {"mode": args.mode, "command": "python tools/benchmark.py " + " ".join(sys.argv[1:]),
              "date": date.today().isoformat(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                            "python": platform.python_version()}, **figures}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
