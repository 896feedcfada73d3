"""Training settings several methods share, torch-free like every settings module (``train.py --help`` loads them)."""

from dataclasses import dataclass

from mokd_fast.core.settings import require, require_min, setting

OPTIMIZERS = ("sgd", "adam")


@dataclass
class SGDRecipe:
    """The training settings of one optimiser over every parameter (official: SGD), listed before ``RunConfig`` in a
    training config's bases (``class SEEDTrainConfig(SGDRecipe, RunConfig)``); a method redeclares a field to change
    its default."""

    lr: float = setting(0.03, "Learning rate per 256 images, scaled by the global batch (--scale_lr).")
    scale_lr: bool = setting(True, "Multiply --lr by global batch / 256; False uses it as given.")
    momentum: float = setting(0.9, "SGD momentum (official 0.9).")
    weight_decay: float = setting(
        1e-4, "Weight decay on every parameter, biases and norms included (official 1e-4; with --optimizer adam, coupled L2).")
    clip_grad: float = setting(0.0, "Per-parameter gradient-norm clip; 0 disables (official).")
    optimizer: str = setting(
        "sgd", "sgd (official) or adam: torch's Adam with --weight_decay as coupled L2 on every parameter and "
        "--momentum unused, for runs of a few hundred steps on small data (the learning proofs, "
        "docs/learning-health.md). The lr schedule is the same; give Adam an lr near 1e-3 (with --scale_lr false).",
        choices=OPTIMIZERS)

    def __post_init__(self) -> None:
        super().__post_init__()  # RunConfig's checks
        require_min(self, 0, "lr", "weight_decay", "clip_grad", "momentum")
        require(self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: choose from {OPTIMIZERS}")


@dataclass
class MilestoneRecipe(SGDRecipe):
    """``SGDRecipe`` with MoCo's per-epoch learning rate (x0.1 at milestones, or a cosine) and an optional warm-up,
    for MCL-MoCo and L-MCL; each redeclares ``schedule`` with its official milestones."""

    schedule: tuple[int, ...] = setting((120, 160), "Epochs at which the learning rate drops x0.1.")
    cos: bool = setting(False, "Per-epoch cosine decay instead of the steps (official --cos).")
    warmup_epochs: int = setting(
        0, "Epochs of a linear warm-up from 0, per step, before the per-epoch schedule takes over (the cosine still "
        "counts from epoch 0). 0: none (official). With --epoch_length, in steps or percent of a short run.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(all(m >= 0 for m in self.schedule), f"--schedule epochs must be >= 0, got {list(self.schedule)}")
        require_min(self, 0, "warmup_epochs")
