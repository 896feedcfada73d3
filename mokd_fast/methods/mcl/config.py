"""MCL-MoCo's settings: peers, keys, queues and loss (``MCLConfig``), and its training recipe (``MCLTrainConfig``).

Defaults are the official code's (winycg/MCL @ 236da2f, ``main_moco_mcl.py``, ``moco/builder_mcl.py``):
two ResNet-18 query encoders with a linear 128-d fc, EMA key encoders at a constant 0.999, a
65,536-key queue per peer, shuffle-BN keys, temperature 0.07, KL temperature 3, the four terms
weighted 1, MoCo v1 views; SGD at 0.03 per 256 images, momentum 0.9, weight decay 1e-4, 200 epochs,
x0.1 at epochs 120 and 160. Imports no torch, so ``train.py --method mcl --help`` is fast.
"""

from dataclasses import dataclass

from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import require, require_min, require_positive, setting
from mokd_fast.methods.common.recipes import MilestoneRecipe

KEY_BN = ("shuffle", "sync", "local")
NEGATIVES = ("queue", "batch")


@dataclass
class MCLConfig:
    """N query encoders, each with an EMA key encoder and a queue, learning from their own and each other's contrasts."""

    archs: tuple[str, ...] = setting(
        ("resnet18", "resnet18"), "The peers' backbones (two or more): torchvision ResNet aliases or any timm CNN or "
        "ViT; heterogeneous peers are allowed.")
    dim: int = setting(128, "Embedding width of every peer (official: the fc's 128 outputs).")
    mlp: bool = setting(
        False, "Give each peer MoCo v2's MLP head (Linear-ReLU-Linear) instead of the linear fc. The official --mlp is a "
        "silent no-op (it registers an unused module), so False is what its runs trained.")
    head_bn: bool = setting(
        False, "With --mlp: BatchNorm after the head's hidden layer (SimCLR's and MoCo v3's projector). Off: official. "
        "A random ResNet's pooled features point nearly one way; without it our short runs' embeddings "
        "collapsed onto that direction (docs/learning-health.md).")
    queue_size: int = setting(65536, "Keys kept per peer as negatives (official --moco-k).")
    negatives: str = setting(
        "queue", "Where each query's negatives come from: queue (official: each peer's queue of earlier batches' keys) "
        "or batch (MoCo v3's contrast: the keys of the other images of this step's global batch, no queue read or "
        "written). On the shapes data only in-batch negatives learned (docs/learning-health.md).", choices=NEGATIVES)
    temperature: float = setting(0.07, "Temperature of the contrastive logits (official --moco-t).")
    kd_temperature: float = setting(3.0, "Temperature of the KL terms between peers' logit distributions (official 3).")
    weight_vcl: float = setting(1.0, "Weight of each peer's own InfoNCE (vcl).")
    weight_svcl: float = setting(1.0, "Weight of the KL between peers' own-queue distributions (svcl).")
    weight_icl: float = setting(1.0, "Weight of the cross-peer InfoNCE: a peer's query against another's key and queue (icl).")
    weight_sicl: float = setting(1.0, "Weight of the KL between the two cross-peer distributions of each pair (sicl).")
    key_momentum: float = setting(0.999, "EMA momentum of the key encoders, constant (official --moco-m).")
    key_bn: str = setting(
        "shuffle", "BatchNorm of the key encoders under DDP: shuffle (official: keys computed on a batch permuted across "
        "ranks, one permutation for every key encoder), sync (SyncBatchNorm in the key encoders, CUDA only) or local "
        "(per-rank statistics). One process: all three are the same.", choices=KEY_BN)
    bn_splits: int = setting(
        1, "One process only: emulate shuffle BN over this many ranks, as MoCo's single-GPU CIFAR demo does: the query "
        "encoders see the batch in N equal groups (BatchNorm statistics per group, as N ranks would) and the key "
        "encoders the batch permuted (drawn from --seed and the step) in N groups, so a query cannot find its key "
        "by shared batch statistics. 1: off (official on one process: one batch's statistics for queries and keys). "
        "Under DDP, --key_bn shuffle does this across the ranks.")
    aug_plus: bool = setting(
        False, "MoCo v2 views (jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale 0.2, blur p 0.5) instead of the official "
        "default MoCo v1 views (grayscale 0.2 then jitter 0.4/0.4/0.4/0.4 always).")
    global_size: int = setting(224, "Side of both views.")
    crop_scale: tuple[float, float] = setting((0.2, 1.0), "Area range of the views' random resized crops (official 0.2-1).")
    fused_ema: bool = setting(True, "Speed switch: the key encoders' EMA as one foreach kernel. False: the official loop.")
    epochs: int = setting(200, "Training length in epochs (official 200).")

    def __post_init__(self) -> None:
        require(self.mlp or not self.head_bn, "--head_bn needs --mlp (the linear head has no hidden layer)")
        require(len(self.archs) >= 2, f"--archs needs two or more peers, got {list(self.archs)}")
        require_min(self, 1, "dim", "queue_size", "global_size", "epochs", "bn_splits")
        require_positive(self, "temperature", "kd_temperature")
        require_min(self, 0, "weight_vcl", "weight_svcl", "weight_icl", "weight_sicl")
        require(0 <= self.key_momentum <= 1, f"--key_momentum must be in [0, 1], got {self.key_momentum}")
        require(self.key_bn in KEY_BN, f"--key_bn {self.key_bn!r}: choose from {KEY_BN}")
        require(self.negatives in NEGATIVES, f"--negatives {self.negatives!r}: choose from {NEGATIVES}")
        require(0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, f"--crop_scale {self.crop_scale}: need 0 < min <= max <= 1")


@dataclass
class MCLTrainConfig(MilestoneRecipe, RunConfig):
    """How to train MCL-MoCo: the engine's settings plus one SGD over every peer."""

    batch_size_per_gpu: int = setting(
        32, "Images per process and step (official: a global batch of 256 on 8 GPUs).")
    sync_bn: bool = setting(False, "SyncBatchNorm in the query encoders under multi-GPU DDP (official MoCo: per-rank BatchNorm).")
    lr: float = setting(0.03, "Learning rate per 256 images (official --lr 0.03 at batch 256), scaled by the global batch.")
    schedule: tuple[int, ...] = setting((120, 160), "Epochs at which the learning rate drops x0.1 (official --schedule).")
    cos: bool = setting(False, "Per-epoch cosine decay instead of the steps (official --cos, off in the README command).")
