"""SEED's settings: teacher, student, loss and views (``SEEDConfig``), and its training recipe (``SEEDTrainConfig``).

Defaults are the official code's (jacobswan1/SEED @ f236cac: ``tools/opts.py``, ``main.py``,
``main_small-patch.py``): student temperature 0.2 (``--temp``), teacher temperature 1e-4
(``--distill-t``), a queue of 65,536 teacher embeddings, the official MLP head, one 224-px view
(six extra 96-px patches with ``--local_crops_number 6``, the small-patch variant), SGD at
0.03 x batch/256 with momentum 0.9 and weight decay 1e-4, 5 warm-up epochs then a per-epoch cosine,
200 epochs. Imports no torch, so ``train.py --method seed --help`` is fast.
"""

from dataclasses import dataclass

from mokd_fast.core.run_config import RunConfig
from mokd_fast.core.settings import require, require_min, require_positive, setting
from mokd_fast.methods.common.recipes import SGDRecipe

TEACHER_FORMATS = ("auto", "ours", "moco", "swav", "timm")
TEACHER_EMBEDDINGS = ("auto", "head", "backbone")
AUGMENTATIONS = ("auto", "mocov2", "swav")


@dataclass
class SEEDConfig:
    """A frozen teacher, a student with an MLP head, and the queue their similarity distributions are taken over."""

    teacher: str = setting(
        "", "The teacher's checkpoint: one of ours (any method; pick the model with --teacher_key), an official MoCo "
        "v1/v2 checkpoint (its query encoder and MLP), a SwAV ResNet-50/w2/w4/w5 (prototypes dropped), or a plain "
        "timm/torchvision state dict (--teacher_arch). Empty: a randomly initialised --teacher_arch, for benchmarks "
        "and tests only.")
    teacher_format: str = setting(
        "auto", "How to read --teacher: auto detects it from the keys; ours, moco, swav or timm force one.",
        choices=TEACHER_FORMATS)
    teacher_key: str | None = setting(
        None, "Which model of one of our checkpoints is the teacher (MOKD: teacher_cnn, teacher_vit, ...; DoGo: "
        "peer_1, peer_2; SEED: student); needed when the file holds several.")
    teacher_arch: str | None = setting(
        None, "The teacher's architecture: read from our checkpoints and MoCo's 'arch' entry when omitted; needed "
        "for a plain state dict (a torchvision alias or timm name) and a random teacher.")
    teacher_embedding: str = setting(
        "auto", "What of the teacher is distilled: head (its projection output: MoCo's and SwAV's 128-d MLP, MOKD's "
        "DINO-head bottleneck before the prototypes, DoGo's projection) or backbone (its pooled feature). auto: the "
        "head where the checkpoint has one. Its width sets the student head's output and the queue's.",
        choices=TEACHER_EMBEDDINGS)
    student_arch: str = setting(
        "resnet18", "The student backbone: a torchvision ResNet alias or any timm CNN or ViT (e.g. efficientnet_b0, "
        "mobilenetv3_large_100).")
    student_hidden: int | None = setting(
        None, "Hidden width of the student's MLP head Linear(d, h) -> ReLU -> Linear(h, D); default d (official).")
    head_bn: bool = setting(
        False, "BatchNorm after the student head's hidden Linear (Linear -> BN -> ReLU -> Linear, SimCLR's projector). "
        "Off: official. A random ResNet's pooled features point nearly one way, so without it the student's "
        "embeddings start almost parallel and our short runs stayed at the loss of a uniform guess "
        "(docs/learning-health.md).")
    student_temp: float = setting(0.2, "Temperature of the student's similarity distribution (official --temp).")
    teacher_temp: float = setting(
        1e-4, "Temperature of the teacher's similarity distribution (official --distill-t); both are computed in "
        "fp32, since at 1e-4 bf16 ties near-duplicate queue entries with the positive.")
    queue_size: int = setting(65536, "Teacher embeddings kept as negatives (official --queue).")
    augmentation: str = setting(
        "auto", "The views' recipe: mocov2 (crop scale 0.2-1) or swav (0.14-1); both bilinear, jitter (0.4, 0.4, 0.4, "
        "0.1) p 0.8, grayscale 0.2, blur p 0.5, flip. auto: swav with a SwAV teacher (--teacher_format swav) or "
        "small patches, as official; mocov2 otherwise.", choices=AUGMENTATIONS)
    global_size: int = setting(224, "Side of the view student and teacher both see.")
    global_crops_scale: tuple[float, float] | None = setting(
        None, "Area range of that view's crop; default: the --augmentation's (0.2-1 or 0.14-1).")
    local_crops_number: int = setting(
        0, "Small patches per image (official small-patch variant: 6), each with its own term over a second queue.")
    local_size: int = setting(96, "Side of the small patches.")
    local_crops_scale: tuple[float, float] = setting((0.05, 0.14), "Area range of the small patches' crops.")
    local_weight: float = setting(1.0, "Weight of the small-patch term (official: 1).")
    epochs: int = setting(200, "Training length in epochs (official default 200).")

    def __post_init__(self) -> None:
        require(self.teacher_format in TEACHER_FORMATS,
                f"--teacher_format {self.teacher_format!r}: choose from {TEACHER_FORMATS}")
        require(self.teacher_embedding in TEACHER_EMBEDDINGS,
                f"--teacher_embedding {self.teacher_embedding!r}: choose from {TEACHER_EMBEDDINGS}")
        require(self.augmentation in AUGMENTATIONS, f"--augmentation {self.augmentation!r}: choose from {AUGMENTATIONS}")
        require_min(self, 1, "queue_size", "global_size", "local_size", "epochs")
        require(self.local_crops_number >= 0, f"--local_crops_number must be >= 0, got {self.local_crops_number}")
        require(self.student_hidden is None or self.student_hidden >= 1,
                f"--student_hidden must be >= 1, got {self.student_hidden}")
        require_positive(self, "student_temp", "teacher_temp")
        require(self.local_weight >= 0, f"--local_weight must be >= 0, got {self.local_weight}")
        for name in ("global_crops_scale", "local_crops_scale"):
            scale = getattr(self, name)
            require(scale is None or 0 < scale[0] <= scale[1] <= 1,
                    f"--{name} {scale}: need 0 < min <= max <= 1")

    @property
    def views(self) -> str:
        """The resolved augmentation recipe."""
        if self.augmentation != "auto":
            return self.augmentation
        return "swav" if self.teacher_format == "swav" or self.local_crops_number else "mocov2"


@dataclass
class SEEDTrainConfig(SGDRecipe, RunConfig):
    """How to train SEED: the engine's settings plus the student's SGD."""

    batch_size_per_gpu: int = setting(
        256, "Images per process and step (the official --batch-size is the global batch; the paper's runs used 256).")
    sync_bn: bool = setting(False, "SyncBatchNorm in the student under multi-GPU DDP (official: per-rank BatchNorm).")
    lr: float = setting(0.03, "Base learning rate (official --lr), scaled by the global batch / 256 (--scale_lr).")
    scale_lr: bool = setting(
        True, "Multiply --lr by global batch / 256. The official script does so only under --distributed, which its "
        "multi-GPU runs need.")
    warmup_epochs: int = setting(
        5, "Epochs of the official warm-up from --lr to the scaled rate (hard-coded 5); per epoch, as official.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require_min(self, 0, "warmup_epochs")
