"""MOKDConfig: the method's settings, named like the official ``main_mokd.py`` flags."""

from dataclasses import dataclass, fields
from typing import Any

from mokd_fast.core.settings import require, require_min, require_positive, setting


@dataclass
class MOKDConfig:
    """Settings of the MOKD method (models, heads, losses); ``TrainConfig`` adds optimisation and data.

    Defaults are the official ``main_mokd.py`` ones, so a command line ported from the official code
    means the same here. Each field's help text is its documentation and its ``train.py`` flag help.
    """

    arch_cnn: str = setting(
        "resnet50", "CNN: an official alias (resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d, "
        "wide_resnet50_2, wide_resnet101_2) or any timm CNN name.")
    arch_vit: str = setting(
        "vit_small", "ViT: an official alias (vit_tiny, vit_small, vit_base) or a timm VisionTransformer name.")
    out_dim: int = setting(65536, "Prototypes of every DINO head and T-head.")
    patch_size: int = setting(16, "ViT patch size for the official aliases.")
    drop_path_rate: float = setting(0.1, "Stochastic depth of the ViT student (the teacher has none).")
    norm_last_layer: bool | None = setting(
        None, "Freeze the DINO heads' prototype gain. Unset is the official behaviour, which ignores the "
        "flag: frozen for the CNN, trainable for the ViT. True/False sets both.")
    use_bn_in_head: bool = setting(False, "BatchNorm in the DINO heads' MLPs.")
    momentum_teacher: float = setting(0.996, "Base EMA momentum of the teachers, annealed to 1 by a cosine.")
    local_crops_number: int = setting(
        8, "Local views per image (at least 1: the cross-model feature search runs on them).")
    input_size: int = setting(224, "Global crop size the CNN T-head's position grid is laid out for (input_size // 32).")
    global_size: int = setting(224, "Side of the global crops fed to the models.")
    local_size: int = setting(96, "Side of the local crops.")
    warmup_teacher_temp: float = setting(0.04, "Teacher temperature at epoch 0.")
    teacher_temp: float = setting(0.04, "Teacher temperature after the warm-up.")
    warmup_teacher_temp_epochs_cnn: int = setting(50, "Temperature warm-up epochs of cnn_self and cnn_thead.")
    warmup_teacher_temp_epochs_vit: int = setting(
        30, "Temperature warm-up epochs of the other six terms (as the official code).")
    epochs: int = setting(200, "Training length in epochs.")
    lamda_c: float = setting(1.0, "Weight of the CNN's cross and search losses.")
    lamda_t: float = setting(1.0, "Weight of the ViT's cross and search losses.")
    student_temp: float = setting(0.1, "Student softmax temperature.")
    center_momentum: float = setting(0.9, "EMA momentum of the six teacher centers.")
    fused_loss: bool = setting(
        True, "Speed switch: one log-softmax per student output and all view pairs in one contraction, "
        "one all-reduce for the centers. False runs the official per-pair loops.")
    fused_ema: bool = setting(True, "Speed switch: one foreach lerp over both teachers. False loops per parameter.")
    single_backward: bool = setting(True, "Speed switch: one backward pass of L_cnn + L_vit. False runs two, as official.")

    def __post_init__(self) -> None:
        require(self.out_dim >= 1, f"out_dim must be >= 1, got {self.out_dim}")
        require(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        require(
            self.local_crops_number >= 1,
            f"local_crops_number must be >= 1 (the cross-model feature search runs on local crops), "
            f"got {self.local_crops_number}",
        )
        require_min(self, 1, "input_size", "global_size", "local_size", "epochs")
        for name in ("warmup_teacher_temp_epochs_cnn", "warmup_teacher_temp_epochs_vit"):
            value = getattr(self, name)
            require(
                0 <= value <= self.epochs,
                f"{name}={value} must lie in [0, epochs={self.epochs}]: the temperature warm-up "
                "cannot outlast training",
            )
        require_positive(self, "warmup_teacher_temp", "teacher_temp", "student_temp")
        for name in ("momentum_teacher", "center_momentum"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{name} must lie in [0, 1], got {value}")
        require(0.0 <= self.drop_path_rate < 1.0, f"drop_path_rate must lie in [0, 1), got {self.drop_path_rate}")

    @property
    def freeze_gain_cnn(self) -> bool:
        """Whether the CNN student's prototype gain is frozen."""
        return True if self.norm_last_layer is None else self.norm_last_layer

    @property
    def freeze_gain_vit(self) -> bool:
        """Whether the ViT student's prototype gain is frozen."""
        return False if self.norm_last_layer is None else self.norm_last_layer

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MOKDConfig":
        """Builds a config, rejecting keys that are not fields (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MOKDConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)
