"""The learning proof's two gates, run before any pre-training: is the data hard for a random network, and learnable?

A proof that ends flat means nothing if the data cannot be learnt, and a gain means little if a
random network already solves the data. So before pre-training, ``tools/learning_proof.py`` checks
(1) the random initialisation's k-NN is low (the cues random features use are what the
augmentations randomise) and (2) a plain supervised run of the same randomly initialised backbone
reaches a high held-out top-1 within a small budget. A failed gate means the data or the pipeline is
broken, not the method.
"""

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mokd_fast.eval.data import Split, default_resize, split_batches
from mokd_fast.models.features import cnn_pooled
from mokd_fast.models.vit import vit_last_blocks


@dataclass(frozen=True)
class SupervisedGate:
    """The supervised run of the second gate.

    Attributes:
        samples: Training images seen at most (the gate's budget).
        target: Held-out top-1 (percent) that passes.
        batch_size: Images per step.
        lr: Adam's peak learning rate (backbone and linear classifier), cosine to 0 over ``samples``.
        eval_every: Training images between held-out evaluations.
    """

    samples: int = 20_000
    target: float = 90.0
    batch_size: int = 64
    lr: float = 1e-3
    eval_every: int = 2_000


def _features(backbone: nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` with gradients: the CNN's pooled feature or the ViT's CLS token, as the k-NN reads them."""
    return cnn_pooled(backbone, x) if kind == "cnn" else vit_last_blocks(backbone, x, 1)[0][:, 0]


@torch.no_grad()
def _top1(backbone: nn.Module, kind: str, head: nn.Linear, split: Split, size: int, device: torch.device,
          num_workers: int) -> float:
    backbone.eval()
    correct = total = 0
    for images, labels, index in split_batches(split, size, default_resize(size), False, 256, 0, 1, device,
                                               num_workers):
        real = index >= 0  # [B]; the last batch is padded with index -1
        correct += int((head(_features(backbone, kind, images)).argmax(1) == labels)[real].sum())
        total += int(real.sum())
    return 100.0 * correct / total


def supervised_run(backbone: nn.Module, kind: str, train: Split, val: Split, classes: int, size: int,
                   device: torch.device, num_workers: int, gate: SupervisedGate, seed: int = 0) -> dict[str, Any]:
    """Gate 2's record: ``supervised_network``'s, without the network."""
    return supervised_network(backbone, kind, train, val, classes, size, device, num_workers, gate, seed)[1]


def supervised_network(backbone: nn.Module, kind: str, train: Split, val: Split, classes: int, size: int,
                       device: torch.device, num_workers: int, gate: SupervisedGate,
                       seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """Trains a copy of ``backbone`` with a linear classifier on ``train`` until ``val`` top-1 reaches the target.

    The views are the linear probe's training views (random resized crop and flip at ``size``);
    the backbone trains in train mode (BatchNorm on batch statistics) and is evaluated in eval mode.
    The trained copy is returned too, since a supervised network is the cheapest trained teacher
    (SEED's learning test in the suite distils one).

    Returns:
        The trained copy (eval mode) and ``{"passed", "top1", "samples", "curve": [{"samples", "top1"}],
        "seconds", ...settings}``.
    """
    start = time.perf_counter()
    # A teacher's backbone (MOKD's eval backbones are its EMA teachers) has requires_grad off; the copy
    # must train whole, or only the linear classifier would learn.
    net = copy.deepcopy(backbone).to(device).requires_grad_(True)
    torch.manual_seed(seed)
    with torch.no_grad():
        net.eval()
        probe = next(split_batches(val, size, default_resize(size), False, 2, 0, 1, device, 0))[0]
        dim = _features(net, kind, probe).shape[1]
    head = nn.Linear(dim, classes).to(device)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=gate.lr)
    steps = math.ceil(gate.samples / gate.batch_size)
    cosine = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    seen, curve, epoch = 0, [], 0
    while seen < gate.samples and not (curve and curve[-1]["top1"] >= gate.target):
        net.train()
        for images, labels, index in split_batches(train, size, default_resize(size), True, gate.batch_size, 0, 1,
                                                   device, num_workers, seed=seed, epoch=epoch):
            images, labels = images[index >= 0], labels[index >= 0]  # without the last batch's padding
            loss = F.cross_entropy(head(_features(net, kind, images)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            cosine.step()
            seen += len(labels)
            if seen // gate.eval_every > (seen - len(labels)) // gate.eval_every or seen >= gate.samples:
                curve.append({"samples": seen, "top1": _top1(net, kind, head, val, size, device, num_workers)})
                net.train()
                if curve[-1]["top1"] >= gate.target or seen >= gate.samples:
                    break
        epoch += 1
    best = max(point["top1"] for point in curve)
    return net.eval(), {"passed": best >= gate.target, "top1": best, "samples": seen, "curve": curve,
                        "seconds": round(time.perf_counter() - start, 1), "target": gate.target,
                        "budget": gate.samples, "batch_size": gate.batch_size,
                        "optimizer": f"Adam lr {gate.lr}, cosine to 0", "views": "random resized crop + flip"}
