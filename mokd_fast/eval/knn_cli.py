"""``tools/eval_knn.py``: DINO's weighted k-NN on frozen features, with the official flags."""

import argparse

import torch.distributed as dist

from mokd_fast.core.errors import UsageError
from mokd_fast.eval.common import (
    describe,
    dump_features,
    labelled_features,
    load_dumped_features,
    run_tool,
    setup,
    write_json,
)
from mokd_fast.eval.features import FeatureNet
from mokd_fast.eval.knn import knn_classify


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation of parsed flags (``eval.cli.knn_parser``); returns the exit status (2: usage error)."""
    return run_tool("eval_knn", _run, args)


def _run(args: argparse.Namespace) -> int:
    if min(args.nb_knn) < 1:
        raise UsageError(f"--nb_knn {args.nb_knn}: every k must be >= 1")
    s = setup(args, need_data=not args.load_features)
    if args.load_features:
        data = load_dumped_features(args.load_features, s.store)
        record = {**data.pop("meta"), "features_from": args.load_features}
    else:
        net = FeatureNet(s.backbone, 1, args.avgpool_patchtokens, knn=True)
        if s.ctx.is_main:
            source = (f"{args.checkpoint_key} of {args.pretrained_weights}" if args.pretrained_weights
                      else "random initialisation")
            print(f"{s.backbone.arch} ({source}): "
                  f"{len(s.train)} train and {len(s.val)} val images ({s.train.format}), {s.ctx.world_size} process(es)")
        data = labelled_features(s, net)
        record = describe(args, s)
        if s.ctx.is_main and args.dump_features:
            dump_features(args.dump_features, data, record)
    if s.ctx.is_main:
        n_train = len(data["train_labels"])
        ks = [k for k in args.nb_knn if k <= n_train]
        if len(ks) < len(args.nb_knn):
            print(f"skipping k > {n_train} (the number of training images)")
        if not ks:
            raise UsageError(f"--nb_knn {args.nb_knn}: every k exceeds the {n_train} training images")
        results = knn_classify(data["train_features"], data["train_labels"], data["val_features"],
                               data["val_labels"], ks, args.temperature, data["num_classes"])
        for k, (top1, top5) in results.items():
            print(f"{k}-NN classifier result: Top1: {top1:.2f}, Top5: {top5:.2f}")
        record.update({k: data[k] for k in ("extract_seconds", "features_per_second") if k in data})
        record.update(temperature=args.temperature, results={str(k): {"top1": a, "top5": b} for k, (a, b) in results.items()})
        print(f"wrote {write_json(args.output_dir, 'knn.json', record)}")
    if s.ctx.distributed:
        dist.barrier()
    return 0
