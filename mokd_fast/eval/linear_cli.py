"""``tools/eval_linear.py``: the official linear probe on a frozen backbone, DDP-aware, resumable."""

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mokd_fast.core.checkpoint_io import atomic_save, describe_contents, load_file
from mokd_fast.core.errors import UsageError
from mokd_fast.eval.common import (
    describe,
    run_tool,
    setup,
    write_json,
)
from mokd_fast.eval.extract import extract_features
from mokd_fast.eval.features import FeatureNet
from mokd_fast.eval.linear import (
    LinearClassifier,
    accuracy,
    broadcast_from_main,
    cached_feature_batches,
    image_feature_batches,
    train_epoch,
)
from mokd_fast.methods.common.optim import LARS

CHECKPOINT = "linear.pth"


def run(args: argparse.Namespace) -> int:
    """Runs the probe of parsed flags (``eval.cli.linear_parser``); returns the exit status (2: usage error)."""
    return run_tool("eval_linear", _run, args)


def _run(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.val_freq < 1:
        raise UsageError(f"--epochs {args.epochs} and --val_freq {args.val_freq} must be >= 1")
    # Read before the features are extracted, so that a wrong file is reported at once.
    evaluated = load_file(args.evaluate, "--evaluate", trust=args.trust_checkpoint) if args.evaluate else None
    s = setup(args, need_data=True)
    ctx, device = s.ctx, s.ctx.device
    net = FeatureNet(s.backbone, args.n_last_blocks, args.avgpool_patchtokens, knn=False)
    with torch.no_grad():
        dim = net(torch.zeros(2, 3, args.input_size, args.input_size, device=device)).shape[1]
    num_labels = len(s.train.classes)
    classifier: nn.Module = LinearClassifier(dim, num_labels).to(device)
    if ctx.distributed:
        classifier = nn.parallel.DistributedDataParallel(classifier, device_ids=[device.index] if device.type == "cuda" else None)
    val_f, _ = extract_features(net, s.val, s.extract, ctx.rank, ctx.world_size, device)  # frozen: extracted once
    val_y = s.val_to_train[s.val.labels].to(device)
    out = Path(args.output_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    record = {**describe(args, s), "n_last_blocks": args.n_last_blocks, "feature_dim": dim}
    if args.evaluate:
        load_classifier(_module(classifier), evaluated, f"--evaluate {args.evaluate}")
        if ctx.is_main:
            top1, top5, loss = accuracy(classifier, val_f, val_y)
            print(f"Accuracy of {args.evaluate} on the {len(val_y)} val images: top-1 {top1:.2f}, top-5 {top5:.2f}")
            write_json(args.output_dir, "linear.json", {**record, "evaluated": args.evaluate, "top1": top1, "top5": top5})
        return 0

    lr = args.lr * args.batch_size_per_gpu * ctx.world_size / 256  # linear scaling rule, as official
    opt_cls = LARS if args.optimizer == "lars" else torch.optim.SGD
    optimizer = opt_cls(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs, eta_min=0)
    start_epoch, best = 0, {"top1": 0.0, "top5": 0.0}
    if (out / CHECKPOINT).exists():
        try:
            state = load_file(out / CHECKPOINT, "--output_dir", map_location=device)
            load_classifier(_module(classifier), state, f"--output_dir {out / CHECKPOINT}")
        except UsageError as err:
            raise UsageError(f"{err}; delete it to start the probe afresh, or pick another --output_dir") from err
        missing = [k for k in ("setup", "optimizer", "scheduler", "epoch", "best") if k not in state]
        if missing:
            raise UsageError(f"--output_dir {out / CHECKPOINT} lacks {missing}, so the probe cannot continue from it; "
                             "delete it or pick another --output_dir")
        if state["setup"] != _resume_key(args, record):
            raise UsageError(f"{out / CHECKPOINT} belongs to another evaluation ({state['setup']}); "
                             "pick another --output_dir or delete it")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"], state["best"]
        if ctx.is_main:
            print(f"resuming {out / CHECKPOINT} at epoch {start_epoch}")
    train_f = train_y = None
    if args.cached_features:
        train_f, _ = extract_features(net, s.train, s.extract, ctx.rank, ctx.world_size, device)
        train_f = broadcast_from_main(train_f, torch.float32, device)
        train_y = s.train.labels.to(device)
    log_file = open(out / "linear_log.jsonl", "a") if ctx.is_main else contextlib.nullcontext()  # noqa: SIM115
    with log_file as log:
        started = time.perf_counter()
        for epoch in range(start_epoch, args.epochs):
            if args.cached_features:
                batches = cached_feature_batches(train_f, train_y, args.batch_size_per_gpu, ctx.rank, ctx.world_size,
                                                 args.seed, epoch)
            else:
                batches = image_feature_batches(net, s.train, s.extract, ctx.rank, ctx.world_size, device, args.seed, epoch)
            stats = {"epoch": epoch, "train_loss": train_epoch(classifier, optimizer, batches), "lr": scheduler.get_last_lr()[0]}
            scheduler.step()
            if ctx.is_main and (epoch % args.val_freq == 0 or epoch == args.epochs - 1):
                top1, top5, loss = accuracy(classifier, val_f, val_y)
                stats.update(val_top1=top1, val_top5=top5, val_loss=loss)
                if top1 > best["top1"]:
                    best = {"top1": top1, "top5": top5}
                print(f"epoch {epoch}: train loss {stats['train_loss']:.4f}, val top-1 {top1:.2f}, top-5 {top5:.2f} "
                      f"(best top-1 {best['top1']:.2f})")
            if ctx.is_main:
                log.write(json.dumps(stats) + "\n")
                log.flush()
                atomic_save({"epoch": epoch + 1, "state_dict": _module(classifier).state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
                             "setup": _resume_key(args, record)}, out / CHECKPOINT)
    if ctx.is_main:
        record.update(epochs=args.epochs, lr=lr, optimizer=args.optimizer, cached_features=args.cached_features,
                      train_seconds=round(time.perf_counter() - started, 2), top1=best["top1"], top5=best["top5"])
        print(f"Linear probe done: best top-1 {best['top1']:.2f}, top-5 {best['top5']:.2f}; "
              f"wrote {write_json(args.output_dir, 'linear.json', record)}")
    if ctx.distributed:
        dist.barrier()
    return 0


def load_classifier(classifier: nn.Module, state: object, where: str) -> None:
    """Loads a saved probe's ``state_dict`` into ``classifier``, or says in one line why the file is not one.

    Raises:
        UsageError: Not a dict with a ``state_dict``, or weights of another feature width or class count.
    """
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise UsageError(f"{where} holds {describe_contents(state)}, not a linear probe (tools/eval_linear.py writes "
                         f"{CHECKPOINT} with a state_dict entry)")
    shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in weights.items()}
    expected = {k: tuple(v.shape) for k, v in classifier.state_dict().items()}
    if shapes != expected:
        raise UsageError(f"{where} is a probe of another shape ({shapes}; this backbone and --data_path need "
                         f"{expected}): another backbone, --n_last_blocks, --avgpool_patchtokens or class count")
    classifier.load_state_dict(weights)


def _module(classifier: nn.Module) -> nn.Module:
    return classifier.module if isinstance(classifier, nn.parallel.DistributedDataParallel) else classifier


def _resume_key(args: argparse.Namespace, record: dict) -> dict:
    """What must match for a saved classifier to be continued."""
    return {k: record[k] for k in ("pretrained_weights", "checkpoint_key", "arch", "feature_dim", "data_path")} | {
        "lr": args.lr, "epochs": args.epochs, "batch": args.batch_size_per_gpu, "cached": args.cached_features}
