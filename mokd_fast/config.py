"""MOKDConfig: the method's settings, named like the official ``main_mokd.py`` flags."""

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class MOKDConfig:
    """Settings of the MOKD method (models, heads, losses); the trainer adds optimisation and data.

    Defaults are the official ones. Where the official code hard-codes a value and ignores its flag we
    keep that value as the default and honour the flag.

    Attributes:
        arch_cnn: Official alias (resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d,
            wide_resnet50_2, wide_resnet101_2) or any timm CNN name.
        arch_vit: Official alias (vit_tiny, vit_small, vit_base) or a timm VisionTransformer name.
        out_dim: Prototypes of every DINO head and T-head.
        patch_size: ViT patch size for the official aliases.
        drop_path_rate: Stochastic depth of the ViT student (the teacher has none).
        norm_last_layer: Freeze the DINO-head prototype gain. ``None`` is the official behaviour,
            which ignores the flag: frozen for the CNN, trainable for the ViT. True/False sets both.
        use_bn_in_head: BatchNorm in the DINO heads' MLPs (official: flag ignored, always off).
        momentum_teacher: Base EMA momentum; the trainer anneals it to 1 with a cosine.
        local_crops_number: Local views per image (at least 1: the feature search needs them).
        input_size: Global crop size the CNN T-head grid is laid out for (``input_size // 32``).
        global_size: Side of the global crops fed to the model.
        local_size: Side of the local crops.
        warmup_teacher_temp: Teacher temperature at epoch 0.
        teacher_temp: Teacher temperature after warm-up.
        warmup_teacher_temp_epochs_cnn: Warm-up epochs of the cnn_self and cnn_thead losses.
        warmup_teacher_temp_epochs_vit: Warm-up epochs of the other six losses (as official).
        epochs: Training length in epochs; bounds the temperature schedules.
        lamda_c: Weight of the CNN's cross and search losses.
        lamda_t: Weight of the ViT's cross and search losses.
        student_temp: Student softmax temperature.
        center_momentum: EMA momentum of the six teacher centers.
        fused_loss: Log-softmax once per student output and all view pairs in one contraction,
            centers updated with one all-reduce; False runs the official per-pair loops.
        fused_ema: One ``torch._foreach_lerp_`` over both teachers; False loops per parameter.
        single_backward: One backward pass of L_cnn + L_vit; False runs two, as official.
    """

    arch_cnn: str = "resnet50"
    arch_vit: str = "vit_small"
    out_dim: int = 65536
    patch_size: int = 16
    drop_path_rate: float = 0.1
    norm_last_layer: bool | None = None
    use_bn_in_head: bool = False
    momentum_teacher: float = 0.996
    local_crops_number: int = 8
    input_size: int = 224
    global_size: int = 224
    local_size: int = 96
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs_cnn: int = 50
    warmup_teacher_temp_epochs_vit: int = 30
    epochs: int = 200
    lamda_c: float = 1.0
    lamda_t: float = 1.0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    fused_loss: bool = True
    fused_ema: bool = True
    single_backward: bool = True

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        require(self.out_dim >= 1, f"out_dim must be >= 1, got {self.out_dim}")
        require(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        require(
            self.local_crops_number >= 1,
            f"local_crops_number must be >= 1 (the cross-model feature search runs on local crops), "
            f"got {self.local_crops_number}",
        )
        for name in ("input_size", "global_size", "local_size", "epochs"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_teacher_temp_epochs_cnn", "warmup_teacher_temp_epochs_vit"):
            value = getattr(self, name)
            require(
                0 <= value <= self.epochs,
                f"{name}={value} must lie in [0, epochs={self.epochs}]: the temperature warm-up "
                "cannot outlast training",
            )
        for name in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
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
