"""Training settings several methods share, torch-free like every settings module (``train.py --help`` loads them)."""

from dataclasses import dataclass

from mokd_fast.core.settings import require_min, setting


@dataclass
class SGDRecipe:
    """The training settings of one SGD over every parameter, listed before ``RunConfig`` in a training config's
    bases (``class MCLTrainConfig(SGDRecipe, RunConfig)``); a method redeclares a field to change its default."""

    lr: float = setting(0.03, "Learning rate per 256 images, scaled by the global batch (--scale_lr).")
    scale_lr: bool = setting(True, "Multiply --lr by global batch / 256; False uses it as given.")
    momentum: float = setting(0.9, "SGD momentum (official 0.9).")
    weight_decay: float = setting(1e-4, "SGD weight decay on every parameter, biases and norms included (official 1e-4).")
    clip_grad: float = setting(0.0, "Per-parameter gradient-norm clip; 0 disables (official).")

    def __post_init__(self) -> None:
        super().__post_init__()  # RunConfig's checks
        require_min(self, 0, "lr", "weight_decay", "clip_grad", "momentum")
