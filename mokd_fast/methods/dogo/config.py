"""DoGo's settings: the peers and their losses (``DoGoConfig``), and its training recipe (``DoGoTrainConfig``).

Defaults are the official template (NeurAI-Lab/DoGo, branch ``dogo``, ``config/template.yaml`` and
``util/train_util.py``): a SimCLR ResNet-18 and a SimSiam ResNet-18 on 32-px images, KL temperature
0.1 with weights 100 and 1, Adam at a constant 3e-4 with weight decay 1e-6, batch 256, no EMA.
Imports no torch, so ``train.py --method dogo --help`` is fast.
"""

from dataclasses import dataclass

from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import require, require_min, require_positive, setting

HEADS = ("simclr", "simsiam")
SIMSIAM_WIDTH = 2048  # the SimSiam projector's width and output, fixed in the official code
OPTIMIZERS = ("adam", "adamw")


@dataclass
class DoGoConfig:
    """Two peers, each with its own self-supervised head and views, distilling each other's similarity matrices."""

    arch_1: str = setting(
        "resnet18", "Peer 1's encoder: a torchvision ResNet alias (built as official: CIFAR stem below 100 px) "
        "or any timm/official-alias CNN or ViT (a CNN and a ViT make a heterogeneous pair).")
    head_1: str = setting("simclr", "Peer 1's self-supervised head and loss.", choices=HEADS)
    n_proj_1: int = setting(128, "Peer 1's output width (official template: 128 for SimCLR).")
    arch_2: str = setting("resnet18", "Peer 2's encoder; as --arch_1.")
    head_2: str = setting("simsiam", "Peer 2's self-supervised head and loss.", choices=HEADS)
    n_proj_2: int = setting(2048, "Peer 2's output width (official template: 2048 for SimSiam).")
    image_size: int = setting(
        32, "Side of every view. Below 100 px the ResNets get the CIFAR stem; 32, 96 and 224 px pick the official "
        "normalisation (64 px needs --norm_mean/--norm_std: the official Tiny-ImageNet values are not known here).")
    norm_mean: tuple[float, float, float] | None = setting(
        None, "Per-channel mean of the views; default: the official one for --image_size.")
    norm_std: tuple[float, float, float] | None = setting(None, "Per-channel std of the views; given with --norm_mean.")
    cifar_stem: bool | None = setting(
        None, "Give torchvision ResNet aliases the CIFAR stem (3x3 stride-1 conv, no max-pool); default: below 100 px, "
        "as official. False keeps the ImageNet stem, about 4x cheaper per 64-px view (the CPU learning proof's).")
    keep_fc: bool = setting(
        True, "Official quirk at 100 px and above: a torchvision ResNet keeps its fc layer, so the feature is the "
        "1000-d classifier output. False: the pooled feature.")
    ntxent_temperature: float = setting(0.5, "NT-Xent temperature (the official code hard-codes 0.5).")
    kl_temperature: float = setting(0.1, "Temperature of the peers' similarity softmaxes (official KL_temperature).")
    kl_weight_1: float = setting(100.0, "Weight of peer 1's KL towards peer 2 (official criterion_weight[2]).")
    kl_weight_2: float = setting(1.0, "Weight of peer 2's KL towards peer 1 (official criterion_weight[3]).")
    global_batch: bool = setting(
        True, "Under DDP, NT-Xent negatives and the B x B similarity matrices over the whole global batch, as the "
        "official single-node run computes them; False: per-process matrices.")
    epochs: int = setting(1000, "Training length in epochs (the official baseline configs: 1000).")
    single_backward: bool = setting(True, "Speed switch: one backward pass of L_1 + L_2. False runs two, as official.")

    def __post_init__(self) -> None:
        require_min(self, 1, "n_proj_1", "n_proj_2", "image_size", "epochs")
        require_positive(self, "ntxent_temperature", "kl_temperature")
        require_min(self, 0, "kl_weight_1", "kl_weight_2")
        for name in ("head_1", "head_2"):
            require(getattr(self, name) in HEADS, f"--{name} {getattr(self, name)!r}: choose from {HEADS}")
        for i in (1, 2):
            head, n_proj = getattr(self, f"head_{i}"), getattr(self, f"n_proj_{i}")
            require(head != "simsiam" or n_proj == SIMSIAM_WIDTH,
                    f"--n_proj_{i} {n_proj} with --head_{i} simsiam: the SimSiam loss compares the predictor's output "
                    f"with the {SIMSIAM_WIDTH}-d projection, so it must be {SIMSIAM_WIDTH}")
        require((self.norm_mean is None) == (self.norm_std is None), "give --norm_mean and --norm_std together")
        require(self.norm_mean is not None or self.image_size != 64,
                "--image_size 64: the official code normalises with Tiny-ImageNet statistics, which are not "
                "transcribed here; give the data's --norm_mean and --norm_std")


@dataclass
class DoGoTrainConfig(RunConfig):
    """How to train DoGo: the engine's settings plus each peer's optimiser (the same recipe for both)."""

    batch_size_per_gpu: int = setting(256, "Images per process and step (official: 256 on one node).")
    sync_bn: bool = setting(
        False, "SyncBatchNorm under multi-GPU DDP. Default off: the official single-node run (nn.DataParallel) "
        "normalises per replica.")
    optimizer: str = setting("adam", "Each peer's optimiser: adam (official; weight decay as coupled L2) or adamw.",
                             choices=OPTIMIZERS)
    lr: float = setting(3e-4, "Each peer's learning rate, not scaled by the batch size (official 3e-4).")
    min_lr: float | None = setting(
        None, "Final learning rate of a cosine decay; default: constant (the official CosineAnnealingLR has "
        "eta_min = lr, a no-op).")
    warmup_epochs: int = setting(0, "Linear learning-rate warm-up epochs (official: none).")
    weight_decay: float = setting(1e-6, "Each peer's weight decay (official 1e-6).")
    clip_grad: float = setting(0.0, "Per-parameter gradient-norm clip of each peer; 0 disables (official).")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_min(self, 0, "lr", "weight_decay", "clip_grad", "warmup_epochs")
        require(self.min_lr is None or self.min_lr >= 0, f"--min_lr must be >= 0, got {self.min_lr}")
        require(self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: choose from {OPTIMIZERS}")

    @property
    def final_lr(self) -> float:
        return self.lr if self.min_lr is None else self.min_lr
