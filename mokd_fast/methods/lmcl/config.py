"""L-MCL's settings (``LMCLConfig``) and training recipe (``LMCLTrainConfig``).

Defaults are the official ImageNet script's (winycg/L-MCL @ 2c0901e, ``main_layer_mcl_imagenet_meta.py``):
two ResNet-18s with auxiliary classifiers, 128-d projections, tau 0.07, KL temperature 3, weights
alpha = beta = 0.01 (vcl, icl) and gamma = lambda = 1 (svcl, sicl), one same-class positive and
8,192 other-class negatives from memory banks updated with momentum 0.5; SGD with Nesterov at 0.1
per 256 images, momentum 0.9, weight decay 1e-4, x0.1 at epochs 30, 60 and 90 of 100; one 224-px
view (random resized crop, flip). Imports no torch.
"""

from dataclasses import dataclass

from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import require, require_min, require_positive, setting
from mokd_fast.methods.common.recipes import MilestoneRecipe

META_MODES = ("on", "off")
MEMORY_MODES = ("bank", "batch")
POSITIVE_DRAWS = ("official", "others")


@dataclass
class LMCLConfig:
    """Classifiers trained together with layer-wise contrastive and distribution terms against memory banks."""

    archs: tuple[str, ...] = setting(
        ("resnet18", "resnet18"), "The networks (two or more torchvision ResNets: resnet18, resnet34, resnet50, ...), "
        "each with three auxiliary classifiers on its earlier stages.")
    num_classes: int | None = setting(None, "Classes; default: read from the training data's labels.")
    feat_dim: int = setting(128, "Width of the projected embeddings and the memory banks (official --feat-dim).")
    memory: str = setting(
        "bank", "Where the contrast's other images come from: bank (the official ImageNet form: per-network memory "
        "banks of the whole training set, --pos_k/--neg_k drawn per image) or batch (the official CIFAR form, for "
        "small data: the other images of the batch; its official recipe also sets --tau 0.1 --alpha 0.1 --beta 0.1).",
        choices=MEMORY_MODES)
    tau: float = setting(0.07, "Temperature of the contrastive logits (official --tau).")
    kd_temperature: float = setting(3.0, "Temperature of the logit KD and the KL terms (official --kd_T).")
    alpha: float = setting(0.01, "Weight of vcl, the intra-network contrast (official --alpha).")
    gamma: float = setting(1.0, "Weight of svcl, the KL between the intra-network distributions (official --gamma).")
    beta: float = setting(0.01, "Weight of icl, the inter-network contrast (official --beta).")
    lam: float = setting(1.0, "Weight of sicl, the KL between the inter-network distributions (official --lam).")
    pos_k: int = setting(1, "Same-class positives drawn per image (official --pos_k).")
    positive_draw: str = setting(
        "official", "How the positives are drawn: official (--pos_k distinct images of the whole class, the image "
        "itself included, as the official sampler) or others (with replacement, never the image itself; this "
        "project's law before 2026-12-04).", choices=POSITIVE_DRAWS)
    neg_k: int = setting(8192, "Other-class negatives drawn per image, with replacement (official --neg_k).")
    nce_momentum: float = setting(0.5, "Weight of the old memory row in the memory update (official --nce_m).")
    official_vcl: bool = setting(
        True, "Official quirk: network b's intra-network logits read network a's memory bank. False: its own bank.")
    meta: str = setting(
        "on", "The pair weights: on learns them with the weight network and its second-order meta step every "
        "--meta_freq batches (official); off gives every pair weight 1 and skips the meta step (faster).",
        choices=META_MODES)
    meta_freq: int = setting(500, "Batches of an epoch between meta steps, from its first (official --meta-freq).")
    meta_times: int = setting(2, "Unrolled inner SGD steps of each meta step (official --times).")
    fused_loss: bool = setting(
        True, "Speed switch: each memory bank gathered once per step and each (bank, network, stage) product once "
        "(N^2 S products). False: the official per-pair gathers and products (4 N (N - 1) S^2), the same numbers.")
    image_size: int = setting(224, "Side of the view.")
    crop_scale: tuple[float, float] = setting((0.08, 1.0), "Area range of the random resized crop (official 0.08-1).")
    epochs: int = setting(100, "Training length in epochs (official 100).")

    def __post_init__(self) -> None:
        require(len(self.archs) >= 2, f"--archs needs two or more networks, got {list(self.archs)}")
        require(self.num_classes is None or self.num_classes >= 2, f"--num_classes must be >= 2, got {self.num_classes}")
        require_min(self, 1, "feat_dim", "pos_k", "neg_k", "image_size", "epochs", "meta_freq", "meta_times")
        require_positive(self, "tau", "kd_temperature")
        require_min(self, 0, "alpha", "gamma", "beta", "lam")
        require(0 <= self.nce_momentum < 1, f"--nce_momentum must be in [0, 1), got {self.nce_momentum}")
        require(self.meta in META_MODES, f"--meta {self.meta!r}: choose from {META_MODES}")
        require(self.memory in MEMORY_MODES, f"--memory {self.memory!r}: choose from {MEMORY_MODES}")
        require(0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, f"--crop_scale {self.crop_scale}: need 0 < min <= max <= 1")


@dataclass
class LMCLTrainConfig(MilestoneRecipe, RunConfig):
    """How to train L-MCL: the engine's settings plus one Nesterov SGD over networks, heads and aggregator."""

    batch_size_per_gpu: int = setting(128, "Images per process and step (official: a global batch of 256 on 2 GPUs).")
    sync_bn: bool = setting(False, "SyncBatchNorm under multi-GPU DDP (official: per-rank BatchNorm).")
    lr: float = setting(0.1, "Learning rate per 256 images (official --init-lr 0.1 at batch 256), scaled by the global batch.")
    momentum: float = setting(0.9, "SGD momentum (official 0.9, Nesterov).")
    schedule: tuple[int, ...] = setting((30, 60, 90), "Epochs at which the learning rate drops x0.1 (official).")
    cos: bool = setting(False, "Per-epoch cosine decay instead of the steps (the official CIFAR script's schedule).")
