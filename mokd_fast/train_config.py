"""TrainConfig: data, optimisation and run settings of ``train.py`` (the method's are in ``MOKDConfig``)."""

from dataclasses import dataclass

from mokd_fast.settings import setting
from pipelines.policy import RESAMPLERS

PIPELINES = ("auto", "torchvision", "ffcv", "dali", "nvjpeg")
OPTIMIZERS = ("adamw", "sgd", "lars")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Base CNN learning rates at or above this are SGD-scale (the recipe: 0.1); AdamW ones are ~1e-3 or below.
ADAMW_LR_LIMIT = 0.01


@dataclass
class TrainConfig:
    """How to train: data, optimisers, schedules, precision, checkpoints, logging.

    Defaults are the official ``main_mokd.py`` ones. Where the official code hard-codes a value and
    ignores its flag (the CNN's minimum learning rate 0.0048 and weight decay 1e-4, the ViT's minimum
    learning rate 1e-5), that value is the default of a per-model flag, and the official flag, when
    given, is honoured.
    """

    data_path: str = setting("", "ImageFolder root of the training images (class sub-folders of images).")
    output_dir: str = setting(".", "Where checkpoints, log.jsonl, TensorBoard events and config.yaml go.")
    saveckp_freq: int = setting(10, "Keep checkpoint{epoch:04}.pth every this many epochs (and after the last).")
    pipeline: str = setting(
        "auto", "Data pipeline: torchvision reads an ImageFolder; ffcv a .beton and dali a shard folder, both from "
        "tools/convert_dataset.py; nvjpeg reads the dali shard folder and decodes with torchvision (nvJPEG on CUDA), "
        "for machines without DALI; auto picks the one --data_path was converted for (nvjpeg for shards on CUDA "
        "when DALI is not installed).",
        choices=PIPELINES)
    crop_resampler: str = setting(
        "auto", "How the ffcv and nvjpeg pipelines cut views from their decoded images: roi_align (one batched kernel, bilinear "
        "area-averaging), resize (per-crop antialiased resize with the policy's bicubic filter, like the reference; "
        "fastest on CPU) or auto (resize on CPU, roi_align on CUDA).", choices=RESAMPLERS)
    global_crops_scale: tuple[float, float] = setting(
        (0.4, 1.0), "Area range of the global crops relative to the image (MOKD's paper recipe: 0.25 1).")
    local_crops_scale: tuple[float, float] = setting(
        (0.05, 0.4), "Area range of the local crops relative to the image (MOKD's paper recipe: 0.05 0.25).")
    batch_size_per_gpu: int = setting(64, "Images per process and step.")
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
    use_fp16: bool | None = setting(None, "Official flag: True means --precision fp16, False means fp32.")
    precision: str = setting(
        "auto", "Autocast precision; auto is bf16 on CUDA and fp32 on CPU. fp16 uses a grad scaler per model.",
        choices=PRECISIONS)
    clip_grad_cnn: float = setting(3.0, "Per-parameter gradient-norm clip of the CNN student; 0 disables.")
    clip_grad_vit: float = setting(0.0, "Per-parameter gradient-norm clip of the ViT student; 0 disables.")
    freeze_last_layer: int = setting(1, "Epochs during which the prototype layers ('last_layer') get no update.")
    sync_bn: bool = setting(True, "SyncBatchNorm in the CNNs under multi-GPU DDP, as official (CUDA only).")
    seed: int = setting(0, "Seed of the weights, the data order and the augmentations.")
    num_workers: int = setting(10, "Data-loading worker processes per process.")
    dist_url: str = setting("env://", "torch.distributed init method; env:// reads torchrun's variables.")
    device: str = setting("auto", "Training device; auto picks CUDA when available.", choices=DEVICES)
    max_steps: int = setting(0, "Stop (with a checkpoint) after this many global steps; 0 runs all epochs.")
    log_every: int = setting(10, "Steps between log.jsonl lines (each costs one host-device sync).")
    ckpt_every_steps: int = setting(1000, "Steps between checkpoint.pth writes (also written at each epoch end); 0: epoch ends only.")
    resume: str = setting("", "Checkpoint to continue from (ours: exact step; an official one: its epoch).")
    fused_clip: bool = setting(
        True, "Speed switch: all per-parameter clip norms in one foreach kernel, no host sync. False: official loop.")
    compile: bool | None = setting(
        None, "Speed switch: torch.compile each branch's student and teacher forward (static shapes, compiled "
        "before the first step). Default: on for CUDA, off for CPU (compilation there costs more than it saves).")
    channels_last: bool | None = setting(
        None, "Speed switch: CNN weights and input crops in channels-last memory. Default: on for CUDA, off for CPU.")
    fused_optim: bool = setting(
        True, "Speed switch: fused AdamW and foreach/fused SGD. False: per-parameter loops.")
    ddp_static_graph: bool = setting(True, "Speed switch: DDP static_graph (every step updates the same parameters).")
    ddp_bucket_view: bool = setting(
        True, "Speed switch: DDP gradient_as_bucket_view (no copy between gradients and all-reduce buckets).")
    knn_every: int = setting(
        0, "Every this many epochs (and before the first step of a fresh run), k-NN of both teachers on --knn_data, "
        "logged with the losses as knn_cnn_top1/top5 and knn_vit_top1/top5; 0 disables.")
    knn_data: str = setting("", "Labelled data for --knn_every: a folder with train and val splits (ImageFolders or "
                            "tools/convert_dataset.py outputs), as tools/eval_knn.py --data_path.")
    knn_k: int = setting(20, "Neighbours of the periodic k-NN (DINO's weighted voting, temperature 0.07).")
    knn_input_size: int = setting(0, "Centre-crop side of the periodic k-NN; 0: the global crop size.")
    tensorboard: bool = setting(True, "Write TensorBoard events to output_dir/tb when tensorboard is installed.")

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name in ("global_crops_scale", "local_crops_scale"):
            lo, hi = getattr(self, name)
            require(0.0 < lo <= hi <= 1.0, f"--{name} {lo} {hi}: need 0 < min <= max <= 1")
        for name in ("batch_size_per_gpu", "log_every", "saveckp_freq"):
            require(getattr(self, name) >= 1, f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "num_workers", "max_steps", "ckpt_every_steps", "freeze_last_layer", "knn_every",
                     "knn_input_size"):
            require(getattr(self, name) >= 0, f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_cnn", "lr_vit", "min_lr_cnn", "min_lr_vit", "weight_decay", "weight_decay_end",
                     "weight_decay_cnn", "weight_decay_end_cnn", "clip_grad_cnn", "clip_grad_vit"):
            require(getattr(self, name) >= 0, f"--{name} must be >= 0, got {getattr(self, name)}")
        require(self.knn_k >= 1, f"--knn_k must be >= 1, got {self.knn_k}")
        require(not self.knn_every or bool(self.knn_data), "--knn_every needs --knn_data (a folder with train and val splits)")
        require(self.min_lr is None or self.min_lr >= 0, f"--min_lr must be >= 0, got {self.min_lr}")
        for name, allowed in (("pipeline", PIPELINES), ("crop_resampler", RESAMPLERS), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS),
                              ("device", DEVICES)):
            require(getattr(self, name) in allowed, f"--{name} {getattr(self, name)!r}: choose from {allowed}")
        if self.use_fp16 is not None:
            implied = "fp16" if self.use_fp16 else "fp32"
            require(
                self.precision in ("auto", implied),
                f"--use_fp16 {self.use_fp16} contradicts --precision {self.precision}; give one of them",
            )

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
    def resolved_precision(self) -> str:
        """``precision`` with ``--use_fp16`` applied; ``auto`` is left for the device to settle."""
        if self.use_fp16 is not None:
            return "fp16" if self.use_fp16 else "fp32"
        return self.precision

    @property
    def final_lr_cnn(self) -> float:
        return self.min_lr_cnn if self.min_lr is None else self.min_lr

    @property
    def final_lr_vit(self) -> float:
        return self.min_lr_vit if self.min_lr is None else self.min_lr
