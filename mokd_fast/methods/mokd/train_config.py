"""TrainConfig: MOKD's training recipe (crops, optimisers, schedules, clipping) on top of the engine's ``RunConfig``."""

from dataclasses import dataclass

from mokd_fast.core.run_config import PIPELINES, RunConfig
from mokd_fast.core.settings import require, require_min, setting

__all__ = ["ADAMW_LR_LIMIT", "OPTIMIZERS", "PIPELINES", "TrainConfig"]

OPTIMIZERS = ("adamw", "sgd", "lars")
# Base CNN learning rates at or above this are SGD-scale (the recipe: 0.1); AdamW ones are ~1e-3 or below.
ADAMW_LR_LIMIT = 0.01


@dataclass
class TrainConfig(RunConfig):
    """How to train MOKD: the engine's settings plus crops, optimisers, schedules and clipping.

    Defaults are the official ``main_mokd.py`` ones. Where the official code hard-codes a value and
    ignores its flag (the CNN's minimum learning rate 0.0048 and weight decay 1e-4, the ViT's minimum
    learning rate 1e-5), that value is the default of a per-model flag, and the official flag, when
    given, is honoured.
    """

    global_crops_scale: tuple[float, float] = setting(
        (0.4, 1.0), "Area range of the global crops relative to the image (MOKD's paper recipe: 0.25 1).")
    local_crops_scale: tuple[float, float] = setting(
        (0.05, 0.4), "Area range of the local crops relative to the image (MOKD's paper recipe: 0.05 0.25).")
    optimizer: str = setting("adamw", "CNN optimiser; the ViT always uses AdamW, as official.", choices=OPTIMIZERS)
    lr_cnn: float = setting(0.3, "CNN peak learning rate per 256 images (scaled by the global batch / 256).")
    lr_vit: float = setting(0.0005, "ViT peak learning rate per 256 images; also the CNN T-head's.")
    warmup_epochs: int = setting(10, "Linear learning-rate warm-up epochs.")
    min_lr: float | None = setting(None, "Final learning rate of both models; overrides min_lr_cnn and min_lr_vit.")
    min_lr_cnn: float = setting(0.0048, "Final CNN learning rate (the official code hard-codes 0.0048).")
    min_lr_vit: float = setting(1e-5, "Final ViT learning rate (the official code hard-codes 1e-5).")
    weight_decay: float = setting(0.04, "Initial weight decay of the ViT and of the CNN's T-head.")
    weight_decay_end: float = setting(0.4, "Final weight decay of the ViT and of the CNN's T-head (cosine).")
    weight_decay_cnn: float = setting(1e-4, "Initial weight decay of the CNN backbone and DINO head.")
    weight_decay_end_cnn: float = setting(1e-4, "Final weight decay of the CNN backbone and DINO head.")
    clip_grad_cnn: float = setting(3.0, "Per-parameter gradient-norm clip of the CNN student; 0 disables.")
    clip_grad_vit: float = setting(0.0, "Per-parameter gradient-norm clip of the ViT student; 0 disables.")
    freeze_last_layer: int = setting(1, "Epochs during which the prototype layers ('last_layer') get no update.")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("global_crops_scale", "local_crops_scale"):
            lo, hi = getattr(self, name)
            require(0.0 < lo <= hi <= 1.0, f"--{name} {lo} {hi}: need 0 < min <= max <= 1")
        require_min(self, 0, "warmup_epochs", "freeze_last_layer")
        require_min(self, 0, "lr_cnn", "lr_vit", "min_lr_cnn", "min_lr_vit", "weight_decay", "weight_decay_end",
                     "weight_decay_cnn", "weight_decay_end_cnn", "clip_grad_cnn", "clip_grad_vit")
        require(self.min_lr is None or self.min_lr >= 0, f"--min_lr must be >= 0, got {self.min_lr}")
        require(self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: choose from {OPTIMIZERS}")

    @property
    def optimizer_warning(self) -> str | None:
        """A warning when the CNN would run AdamW at a learning rate meant for SGD, else ``None``.

        The official defaults (``--optimizer adamw``, ``--lr_cnn 0.3``) do exactly that, while its
        published recipe passes ``--optimizer sgd``; AdamW at such a rate wrecks the CNN within an epoch,
        so the run says so instead of failing silently. It stays a warning to keep the official defaults.
        """
        if self.optimizer == "adamw" and self.lr_cnn >= ADAMW_LR_LIMIT:
            return (f"--optimizer adamw with --lr_cnn {self.lr_cnn}: the CNN gets AdamW at a learning rate meant "
                    f"for SGD and will degrade; the official recipe uses --optimizer sgd (for AdamW, use an --lr_cnn "
                    f"below {ADAMW_LR_LIMIT})")
        return None

    @property
    def warnings(self) -> list[str]:
        return [self.optimizer_warning] if self.optimizer_warning is not None else []

    @property
    def final_lr_cnn(self) -> float:
        return self.min_lr_cnn if self.min_lr is None else self.min_lr

    @property
    def final_lr_vit(self) -> float:
        return self.min_lr_vit if self.min_lr is None else self.min_lr
