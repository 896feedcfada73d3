"""BatchNorm statistics recomputed on the evaluation's own images, so a random and a trained network are read alike.

A randomly initialised network's BatchNorm buffers hold mean 0 and variance 1, which describe no
real activations, and a student's buffers were last updated by small local crops. Reading both
through statistics of the k-NN bank's clean images (as "precise BN" does) makes the random-init
baseline and the trained network comparable. The copy leaves the training run's buffers untouched.
"""

import copy

import torch
from torch import nn

from mokd_fast.eval.data import Split, split_batches
from mokd_fast.eval.extract import ExtractSettings


def with_fresh_batchnorm(net: nn.Module, split: Split, settings: ExtractSettings, device: torch.device) -> nn.Module:
    """A copy of ``net`` in eval mode whose BatchNorm buffers are the average statistics of ``split``'s eval views.

    Every rank passes over the whole split (no communication), so every rank gets the same buffers.

    Args:
        net: Images ``[B, 3, S, S]`` -> features; its BatchNorm layers are the ones refreshed.

    Returns:
        ``net`` itself when it has no BatchNorm layer, else the refreshed copy.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return net
    fresh = copy.deepcopy(net).eval()
    norms = [m for m in fresh.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the pass
        norm.train()
    with torch.no_grad():
        for images, _, index in split_batches(split, settings.input_size, settings.resize_size, False,
                                              settings.batch_size, 0, 1, device, settings.num_workers):
            fresh(images[index >= 0])  # [b, 3, S, S] without the last batch's padding
    return fresh.eval()
