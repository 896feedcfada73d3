#!/usr/bin/env python
"""Benchmarks (never tests): ``python tools/benchmark.py --mode {convert,data,step,e2e,knn} ...``.

``step``: the training step alone on synthetic batches already on the device; ``e2e``: the step fed
by a real pipeline (data wait included). Both time our step (all switches as resolved for the
device), and with ``--baseline`` the official execution side by side, with ``--ablate`` each switch
flipped in turn, with ``--parts`` the step's unavoidable pieces alone (the composition bound);
FLOPs per sample (torch.utils.flop_counter) and MFU against ``--peak_tflops`` or a measured matmul
rate. The record is rewritten after every variant, so a run cut short keeps what it measured.
``profile``: ``torch.profiler`` over a few of our steps: time per region, top kernels, launches
per step, GPU idle fraction (``mokd_fast.bench.profile``).
``data``: delivered multi-crop samples/s (and crops/s) of a pipeline on the device.
``convert``: images/s of tools/convert_dataset.py for each format and worker count, over a folder of
ImageNet-sized JPEGs made from the photographs bundled with scikit-image, and the output sizes.
``knn``: features/s of ``tools/eval_knn.py`` per precision over ``--data`` (train/ and val/) or
``--images`` such JPEGs, beside the backbone alone on a batch already on the device.
Writes a JSON record (command, machine, date, figures).
"""

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mokd_fast.convert.cli import main as convert_main
from mokd_fast.methods import METHODS
from mokd_fast.sample_data.photos import PHOTO_NAMES, sample_photos


def imagenet_like_folder(root: Path, n: int, seed: int = 0, workers: int = 1) -> Path:
    """``n`` JPEGs (quality 90) sized like ImageNet's (short side 333..500, aspect 3/4..4/3), 10 classes.

    The crops are drawn here in one sequence, so the images are the same for any ``workers``; only
    the resizing and JPEG encoding are spread over the worker processes.
    """
    rng = np.random.default_rng(seed)
    sizes = [photo.size for photo in sample_photos().values()]
    jobs = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        short = int(rng.integers(333, 501))
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        size = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        crop_w, crop_h = min(width, size[0]), min(height, size[1])
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        path = root / f"class{i % 10}" / f"{PHOTO_NAMES[i % len(sizes)]}_{i:05d}.jpg"
        jobs.append((i % len(sizes), (left, top, left + crop_w, top + crop_h), size, path))
    for folder in {path.parent for *_, path in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:  # forked before any CUDA use
            pool.map(_render, jobs, chunksize=max(1, n // (8 * workers)))
    else:
        for job in jobs:
            _render(job)
    return root


_PHOTOS: list[Image.Image] = []


def _render(job: tuple[int, tuple[int, int, int, int], tuple[int, int], Path]) -> None:
    """One image of :func:`imagenet_like_folder` (photos loaded once per process)."""
    if not _PHOTOS:
        _PHOTOS.extend(sample_photos().values())
    photo, box, size, path = job
    _PHOTOS[photo].crop(box).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)


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


def bench_data(args: argparse.Namespace) -> dict:
    """Delivered multi-crop batches per second on the device, after a warm-up (compilation, workers)."""
    import torch

    from pipelines import PIPELINES, MultiCropPolicy, resolve_pipeline

    device = torch.device(args.device)
    name, data = resolve_pipeline(args.pipeline, args.data, device)
    policy = MultiCropPolicy.mokd(args.global_size, args.local_size, (0.25, 1.0), (0.05, 0.25), args.local_crops_number)
    options = {"resampler": args.resampler, "gather": not args.no_gather} if name in ("ffcv", "nvjpeg") else {}
    pipe = PIPELINES[name](data, policy, args.batch_size_per_gpu, 1, 0, 0, args.num_workers, device, **options)
    needed = args.warmup + args.steps
    batches, epoch, times = 0, 0, []
    while batches < needed:
        for batch in pipe.epoch(epoch):
            if device.type == "cuda":
                torch.cuda.synchronize()  # the batch is really on the device
            times.append(time.perf_counter())
            batches += 1
            if batches == needed:
                break
        epoch += 1
    seconds = times[-1] - times[args.warmup - 1] if args.warmup else times[-1] - times[0]
    steps = args.steps if args.warmup else args.steps - 1
    samples = steps * args.batch_size_per_gpu
    return {"pipeline": name, "device": str(device), "batch_size_per_gpu": args.batch_size_per_gpu,
            "global_size": args.global_size, "local_size": args.local_size,
            "local_crops_number": args.local_crops_number, "num_workers": args.num_workers, **options, "steps": steps,
            "seconds": round(seconds, 3), "samples_per_s": round(samples / seconds, 2),
            "crops_per_s": round(samples * (2 + args.local_crops_number) / seconds, 1)}


def bench_knn(args: argparse.Namespace) -> dict:
    """Features/s of ``tools/eval_knn.py`` end to end (loader, backbone, gather), beside the backbone alone.

    The tool's rate counts both extraction passes, loader start-up included; the backbone-only rate
    (one random batch already on the device) is its ceiling, so the gap between them is the loader.
    """
    import torch

    from mokd_fast.eval.cli import knn_main

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="mokd_knn_bench_"))
    try:
        data = Path(args.data) if args.data else _labelled_folder(work / "data", args.images)
        runs = []
        for precision in args.precisions:
            out = work / f"knn_{len(runs)}"
            start = time.perf_counter()
            status = knn_main(["--arch", args.arch, "--data_path", str(data), "--device", device.type,
                               "--precision", precision, "--batch_size_per_gpu", str(args.batch_size_per_gpu),
                               "--num_workers", str(args.num_workers), "--nb_knn", "20", "--output_dir", str(out)])
            if status:
                raise SystemExit(f"eval_knn failed with status {status}")
            report = json.loads((out / "knn.json").read_text())
            runs.append({"precision": precision, "tool_seconds": round(time.perf_counter() - start, 2),
                         "extract_seconds": report["extract_seconds"],
                         "features_per_s": report["features_per_second"],
                         "backbone_features_per_s": _backbone_rate(args, device, precision),
                         "top1_k20": report["results"]["20"]["top1"]})
            print(json.dumps(runs[-1]), flush=True)
        return {**_machine(device), "arch": args.arch, "weights": "random init", "data": args.data or "generated",
                "train_images": report["train_images"], "val_images": report["val_images"],
                "batch_size_per_gpu": args.batch_size_per_gpu, "num_workers": args.num_workers, "runs": runs}
    finally:
        shutil.rmtree(work)


def _labelled_folder(root: Path, n: int) -> Path:
    """``train/`` (9/10 of ``n``) and ``val/`` ImageNet-sized JPEGs, made with every CPU."""
    imagenet_like_folder(root / "train", n - n // 10, seed=0, workers=os.cpu_count() or 1)
    imagenet_like_folder(root / "val", n // 10, seed=1, workers=os.cpu_count() or 1)
    return root


def _backbone_rate(args: argparse.Namespace, device, precision: str) -> float:
    """Images/s of the k-NN feature network on one random 224 batch kept on the device."""
    import contextlib

    import torch

    from mokd_fast.eval.features import FeatureNet
    from mokd_fast.models.weights import load_backbone

    backbone = load_backbone("", "teacher_cnn", args.arch)
    net = FeatureNet(backbone, knn=True).to(device).eval()
    images = torch.randn(args.batch_size_per_gpu, 3, 224, 224, device=device)
    cuda = device.type == "cuda"
    if cuda and backbone.kind == "cnn":
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    bf16 = cuda and precision in ("auto", "bf16")
    autocast = torch.autocast("cuda", torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    with torch.no_grad(), autocast:
        for _ in range(args.warmup + args.steps):
            net(images)
            if cuda:
                torch.cuda.synchronize()  # sync point: the batch is finished
            times.append(time.perf_counter())
    return round(args.steps * args.batch_size_per_gpu / (times[-1] - times[args.warmup - 1]), 1)


def _machine(device) -> dict:
    import torch

    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda}
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return info


def _train_setup(args: argparse.Namespace):
    """The method and training configs, the process context, the device and the views of a step/e2e/profile run.

    Any registered method: its settings come from its ``benchmark_settings`` (the shared flags it uses)
    over its defaults; this tool knows no method by name.
    """
    import torch

    from mokd_fast.cli import configs_from_dict
    from mokd_fast.core.distributed import DistContext
    from mokd_fast.methods import METHODS

    device = torch.device(args.device)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    method_cls = METHODS[args.method].method_class()
    common = {"batch_size_per_gpu": args.batch_size_per_gpu, "device": device.type, "num_workers": args.num_workers}
    method, cfg = configs_from_dict({"method": args.method, **common, **_method_settings(args)})
    return method, cfg, ctx, device, method_cls.views(method, cfg)


def _method_settings(args: argparse.Namespace) -> dict:
    """The method's own settings for this run (``Method.benchmark_settings`` of the shared flags)."""
    from mokd_fast.methods import METHODS

    settings = METHODS[args.method].method_class().benchmark_settings(vars(args))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def _needs_labels(args: argparse.Namespace) -> bool:
    from mokd_fast.methods import METHODS

    return METHODS[args.method].method_class().needs_labels


def _labels(args: argparse.Namespace):
    """The synthetic training set's classes for a method with per-sample memory (L-MCL), else None."""
    from mokd_fast.bench.timing import synthetic_labels

    return synthetic_labels(args.train_images) if _needs_labels(args) else None


def _train_figures(args: argparse.Namespace, policy) -> dict:
    """The record's description of the trained models and views: the method's settings for this run."""
    labels = {"train_images": args.train_images} if _needs_labels(args) else {}
    return {"method": args.method, **_method_settings(args), **labels, "batch_size_per_gpu": args.batch_size_per_gpu,
            "views": policy.summary()}


def bench_train(args: argparse.Namespace) -> dict:
    """Step or end-to-end throughput of our step, the official execution, the ablations and the parts, in one run."""
    from mokd_fast.bench.parts import time_parts
    from mokd_fast.bench.timing import (
        SWITCHES,
        bench_step,
        count_flops,
        matmul_peak_flops,
        switches_on,
        synthetic_batches,
        with_switches,
    )
    from mokd_fast.core.switches import StepSwitches
    from pipelines import PIPELINES, resolve_pipeline

    method, cfg, ctx, device, policy = _train_setup(args)
    pipeline = "synthetic"
    if args.mode == "e2e":
        pipeline, data = resolve_pipeline(args.pipeline, args.data, device)

    def batches(train_cfg):
        if args.mode == "step":
            return synthetic_batches(policy, args.batch_size_per_gpu, device)
        pipe = PIPELINES[pipeline](data, policy, args.batch_size_per_gpu, 1, 0, 0, args.num_workers, device,
                                   channels_last=StepSwitches.resolve(train_cfg, device).channels_last)
        return (b for epoch in range(10**6) for b in pipe.epoch(epoch))

    variants = [("ours", set(), False)]
    if args.baseline:
        variants.append(("baseline", set(), True))
    if args.ablate:
        on_here = switches_on(method, cfg, device)
        variants += [(f"-{n}", {n}, False) for n in SWITCHES if n in on_here]
        # Switches off by default on this device are timed turned on, the evidence for the default.
        variants += [(f"+{n}", {n}, False) for n in ("compile", "channels_last") if n not in on_here]
    figures = {"pipeline": pipeline, **_machine(device), **_train_figures(args, policy),
               "optimizer": getattr(cfg, "optimizer", None),  # None: the method has one fixed optimiser
               "global_size": args.global_size, "local_size": args.local_size,
               "local_crops_number": policy.local_crops_number, "steps": args.steps, "warmup": args.warmup, "runs": []}
    runs = figures["runs"]
    for label, flip, baseline in variants:
        m, c = with_switches(method, cfg, flip if label.startswith("-") else set(), device, baseline)
        if label.startswith("+"):
            c = replace(c, **{name: True for name in flip})
        run = {"variant": label, **bench_step(m, c, ctx, batches(c), args.steps, args.warmup, _labels(args))}
        run["relative_to_ours"] = round(run["samples_per_s"] / runs[0]["samples_per_s"], 3) if runs else 1.0
        runs.append(run)
        print(json.dumps({k: run[k] for k in ("variant", "samples_per_s", "step_ms_median", "data_wait")}), flush=True)
        _save(args, figures)
    if args.parts:
        one = next(synthetic_batches(policy, args.batch_size_per_gpu, device))
        figures["parts"] = time_parts(method, cfg, device, one, args.steps, args.warmup)
        figures["ours_over_bound"] = round(runs[0]["samples_per_s"] / figures["parts"]["bound_samples_per_s"], 3)
        if "teacher" in figures["parts"]["parts"]:  # SEED: what the frozen teacher's forward costs
            figures["teacher_share_of_step"] = round(
                figures["parts"]["parts"]["teacher"]["ms_median"] / runs[0]["step_ms_median"], 3)
        print(json.dumps({"parts": figures["parts"], "ours_over_bound": figures["ours_over_bound"]}), flush=True)
        _save(args, figures)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else matmul_peak_flops(device)
    flops = count_flops(method, cfg, ctx, next(synthetic_batches(policy, args.batch_size_per_gpu, device)),
                        _labels(args))
    for run in runs:
        run["mfu"] = round(flops * run["samples_per_s"] / peak, 4)
    figures.update(flops_per_sample=round(flops), peak_flops=round(peak),
                   peak_source="--peak_tflops" if args.peak_tflops else "measured matmul")
    return figures


def bench_profile(args: argparse.Namespace) -> dict:
    """``torch.profiler`` over ``--steps`` of our steps on synthetic batches, after ``--warmup`` unrecorded ones."""
    from mokd_fast.bench.profile import markdown, profile_step
    from mokd_fast.bench.timing import synthetic_batches
    from mokd_fast.engine.step import TrainStep

    method, cfg, ctx, device, policy = _train_setup(args)
    step = TrainStep(method, cfg, ctx, iters_per_epoch=args.warmup + args.steps, labels=_labels(args))
    record = profile_step(step, synthetic_batches(policy, args.batch_size_per_gpu, device), args.steps, args.warmup,
                          trace_path=str(args.trace) if args.trace else None)
    print(markdown(record), flush=True)
    return {**_machine(device), **_train_figures(args, policy), "global_size": args.global_size,
            "local_size": args.local_size, "local_crops_number": policy.local_crops_number,
            "switches": vars(step.switches), "profile": record}


def _record(args: argparse.Namespace, figures: dict) -> dict:
    """The JSON record: command, date, machine, then the mode's figures."""
    return {"mode": args.mode, "command": "python tools/benchmark.py " + " ".join(args.argv),
            "date": date.today().isoformat(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                          "python": platform.python_version()}, **figures}


def _save(args: argparse.Namespace, figures: dict) -> None:
    """Writes the record to ``--json`` (atomically: a reader never sees half a file)."""
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(_record(args, figures), indent=1) + "\n")
        os.replace(tmp, args.json)


def step_table(record: dict) -> str:
    rows = ["| variant | samples/s (median step) | vs ours | mean samples/s | step ms median | p90 | max | data wait | "
            "peak GiB | MFU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        rows.append(f"| {r['variant']} | {r['samples_per_s']} | {r['relative_to_ours']}x | {r.get('samples_per_s_mean')} | "
                    f"{r['step_ms_median']} | {r['step_ms_p90']} | {r.get('step_ms_max')} | {r['data_wait']:.1%} | "
                    f"{r['peak_memory_gib']} | "
                    f"{format(r['mfu'], '.1%') if 'mfu' in r else 'n/a'} |")
    if "parts" in record:
        parts = record["parts"]
        rows += ["", "| part | ms median | p90 |", "|---|---|---|"]
        rows += [f"| {name} | {p['ms_median']} | {p['ms_p90']} |" for name, p in parts["parts"].items()]
        rows.append(f"| **sum (the bound)** | {parts['bound_ms']} ({parts['bound_samples_per_s']} samples/s) | |")
        rows.append(f"\nours / bound: {record.get('ours_over_bound', 'n/a')}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__)
    parser.add_argument("--mode", required=True, choices=["convert", "data", "step", "e2e", "knn", "profile"])
    parser.add_argument("--json", type=Path, default=None, help="where to write the record")
    conv = parser.add_argument_group("--mode convert")
    conv.add_argument("--images", type=int, default=None,
                      help="ImageNet-sized JPEGs to make (convert: 2000; knn without --data: 10000)")
    conv.add_argument("--formats", nargs="+", default=["dali", "ffcv"], choices=["dali", "ffcv"])
    conv.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    data = parser.add_argument_group("--mode data")
    data.add_argument("--pipeline", default="auto", choices=["auto", "synthetic", "torchvision", "ffcv", "dali", "nvjpeg"],
                      help="auto: dali/nvjpeg for a shard folder (nvjpeg on CUDA without DALI), ffcv for a .beton")
    data.add_argument("--data", default=None, help="ImageFolder, .beton or shard folder")
    data.add_argument("--batch_size_per_gpu", type=int, default=64)
    data.add_argument("--local_crops_number", type=int, default=8)
    data.add_argument("--global_size", type=int, default=224)
    data.add_argument("--local_size", type=int, default=96)
    data.add_argument("--steps", type=int, default=20, help="timed batches")
    data.add_argument("--warmup", type=int, default=3, help="batches before timing starts")
    data.add_argument("--num_workers", type=int, default=2)
    data.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    data.add_argument("--resampler", default="auto", choices=["auto", "roi_align", "resize"],
                      help="ffcv, nvjpeg: how views are cut from the decoded canvas (train.py --crop_resampler)")
    data.add_argument("--no_gather", action="store_true",
                      help="ffcv, nvjpeg: run the photometric ops on the whole batch under masks (the compile-friendly form)")
    train = parser.add_argument_group("--mode step / e2e / profile (also --batch_size_per_gpu, crops, --steps, "
                                      "--warmup, --data)")
    train.add_argument("--method", default="mokd", choices=tuple(METHODS),
                       help="the method whose step is timed (dogo, mcl, lmcl: --arch_1/--arch_2 peers on --global_size "
                            "views; lmcl with memory banks over --train_images; "
                            "seed: --student_arch distilling --teacher or a random --teacher_arch on one --global_size "
                            "view and --patches small ones)")
    train.add_argument("--arch_cnn", default="resnet50")
    train.add_argument("--arch_vit", default="vit_small")
    train.add_argument("--out_dim", type=int, default=65536)
    train.add_argument("--arch_1", default="resnet18", help="dogo: peer 1's encoder (SimCLR head); mcl: peer 1")
    train.add_argument("--arch_2", default="resnet18", help="dogo: peer 2's encoder (SimSiam head); mcl: peer 2")
    train.add_argument("--student_arch", default="resnet18", help="seed: the student backbone")
    train.add_argument("--teacher_arch", default="resnet50",
                       help="seed: the teacher, randomly initialised as a MoCo-v2 ResNet with its 128-d MLP")
    train.add_argument("--teacher", default="", help="seed: a teacher checkpoint instead (train.py --teacher)")
    train.add_argument("--patches", type=int, default=0, help="seed: small patches per image (official variant: 6)")
    train.add_argument("--classes", type=int, default=1000, help="lmcl: classifier width")
    train.add_argument("--train_images", type=int, default=1281167,
                       help="lmcl: images in the (synthetic) training set: the memory banks' rows")
    train.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw", "lars"], help="the CNN's optimiser")
    train.add_argument("--baseline", action="store_true",
                       help="also time the official execution (every switch off, fp16 with scalers on CUDA)")
    train.add_argument("--ablate", action="store_true", help="also time each switch flipped in turn")
    train.add_argument("--parts", action="store_true",
                       help="also time the step's unavoidable pieces alone (backbones, heads) and report ours / their sum")
    train.add_argument("--trace", type=Path, default=None, help="profile: also write a Chrome trace here")
    train.add_argument("--peak_tflops", type=float, default=None,
                       help="MFU denominator; default: a measured bf16 (CUDA) or fp32 (CPU) matmul rate")
    knn = parser.add_argument_group("--mode knn (also --data, --batch_size_per_gpu, --num_workers, --device, "
                                    "--steps and --warmup for the backbone-only rate)")
    knn.add_argument("--arch", default="resnet50", help="backbone (random init: the rate does not depend on weights)")
    knn.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"],
                     help="one eval_knn run each, in this order")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.device == "auto":
        args.device = "cuda" if _cuda() else "cpu"
    if args.mode == "knn" and args.warmup < 1:
        parser.error("--mode knn needs --warmup >= 1 (the first backbone batch autotunes)")
    if args.images is None:
        args.images = 10000 if args.mode == "knn" else 2000
    if args.mode in ("data", "e2e") and not args.data:
        parser.error(f"--mode {args.mode} needs --data (an ImageFolder, a .beton or a shard folder)")
    if args.mode == "e2e" and args.pipeline == "synthetic":
        parser.error("--mode e2e times a real pipeline; --mode step is the synthetic one")
    if args.mode == "data" and args.pipeline == "synthetic":
        parser.error("--mode data times a real pipeline; pick torchvision, ffcv, dali, nvjpeg or auto")
    if args.parts and args.mode != "step":
        parser.error("--parts belongs to --mode step (the bound is of the step alone)")
    if args.parts and METHODS[args.method].method_class().parts_module is None:
        parser.error(f"--parts: --method {args.method} has no breakdown into parts (its class names no parts_module); "
                     "time its step with --mode step or e2e")
    modes = {"convert": bench_convert, "data": bench_data, "step": bench_train, "e2e": bench_train, "knn": bench_knn,
             "profile": bench_profile}
    figures = modes[args.mode](args)
    _save(args, figures)
    record = _record(args, figures)
    print(json.dumps(record, indent=1))
    if "runs" in record and args.mode in ("step", "e2e"):
        print(step_table(record))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
