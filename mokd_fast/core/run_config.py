"""RunConfig: the engine's settings (data, precision, speed switches, DDP, checkpoints, logs) for every method.

Each method's training settings subclass it (``train_config.TrainConfig`` for MOKD), adding their
optimisation flags and, where the method's official code differs, their own defaults.
"""

from dataclasses import dataclass

from mokd_fast.core.settings import require, require_min, setting
from pipelines.policy import RESAMPLERS

PIPELINES = ("auto", "torchvision", "ffcv", "dali", "nvjpeg")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
KNN_BN_MODES = ("running", "refresh")


@dataclass
class RunConfig:
    """How to run a method: data, precision, speed switches, DDP, checkpoints, logging, evaluation."""

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
    color_jitter: tuple[float, float, float, float] | None = setting(
        None, "Brightness, contrast, saturation and hue strengths that replace every view's colour jitter (its "
        "probability and order stay the method's); default: the method's own. For small data whose colours are "
        "random per image: 0.4 0.4 0.4 0.4 (MoCo v1's) randomises hue, so colour cannot tell images apart.")
    batch_size_per_gpu: int = setting(64, "Images per process and step.")
    use_fp16: bool | None = setting(None, "Official flag: True means --precision fp16, False means fp32.")
    precision: str = setting(
        "auto", "Autocast precision; auto is bf16 on CUDA and fp32 on CPU. fp16 uses a grad scaler per model.",
        choices=PRECISIONS)
    sync_bn: bool = setting(True, "SyncBatchNorm in the CNNs under multi-GPU DDP, as official (CUDA only).")
    seed: int = setting(0, "Seed of the weights, the data order and the augmentations.")
    num_workers: int = setting(10, "Data-loading worker processes per process.")
    dist_url: str = setting("env://", "torch.distributed init method; env:// reads torchrun's variables.")
    device: str = setting("auto", "Training device; auto picks CUDA when available.", choices=DEVICES)
    max_steps: int = setting(0, "Stop (with a checkpoint) after this many global steps; 0 runs all epochs.")
    epoch_length: int = setting(
        0, "Steps in a schedule epoch; 0: one pass over the data (official). N > 0 counts every epoch setting "
        "(--epochs, the lr, weight-decay and teacher-temperature warm-ups, --freeze_last_layer, lr milestones, "
        "the EMA and lr cosines, --knn_every, --saveckp_freq) in units of N steps while the data keep streaming "
        "epoch after epoch, so a short run gets complete schedules: --epoch_length 1 gives them in steps, "
        "--epochs 100 --epoch_length RUN_STEPS/100 in percent of the run (DINOv2's OFFICIAL_EPOCH_LENGTH).")
    log_every: int = setting(10, "Steps between log.jsonl lines (each costs one host-device sync).")
    ckpt_every_steps: int = setting(
        1000, "Steps between checkpoint.pth writes (also written after each pass over the data and with each "
        "--saveckp_freq keeper); 0: only those.")
    resume: str = setting("", "Checkpoint to continue from (ours: exact step; an official one: its epoch).")
    trust_checkpoint: bool = setting(
        False, "Read --resume and --teacher with Python's full unpickler, which runs any code a .pth file carries: "
        "only for files you trust. Off: such files are read as data, and one that asks for more is refused.")
    fused_clip: bool = setting(
        True, "Speed switch: all per-parameter clip norms in one foreach kernel, no host sync. False: official loop.")
    compile: bool | None = setting(
        None, "Speed switch: torch.compile the method's networks (MOKD: each branch's student and teacher forward; "
        "DoGo: each peer), static shapes, compiled before the first step. Default: on for CUDA, off for CPU (compilation there costs more than it saves).")
    channels_last: bool | None = setting(
        None, "Speed switch: convolution weights (MOKD: the CNNs') and input crops in channels-last memory. Default: "
        "on for CUDA, off for CPU.")
    fused_optim: bool = setting(
        True, "Speed switch: fused AdamW and foreach/fused SGD. False: per-parameter loops.")
    ddp_static_graph: bool = setting(True, "Speed switch: DDP static_graph (every step updates the same parameters).")
    ddp_bucket_view: bool = setting(
        True, "Speed switch: DDP gradient_as_bucket_view (no copy between gradients and all-reduce buckets).")
    knn_every: int = setting(
        0, "Every this many epochs (also before the first step of a fresh run and after the last step), k-NN of "
        "the method's eval backbones (MOKD: both teachers, logged as knn_cnn_top1/top5 and knn_vit_top1/top5; DoGo: "
        "both peers' encoders, knn_peer_1_*/knn_peer_2_*) on --knn_data; 0 disables.")
    knn_data: str = setting("", "Labelled data for --knn_every: a folder with train and val splits (ImageFolders or "
                            "tools/convert_dataset.py outputs), as tools/eval_knn.py --data_path.")
    knn_k: int = setting(20, "Neighbours of the periodic k-NN (DINO's weighted voting, temperature 0.07).")
    knn_input_size: int = setting(0, "Centre-crop side of the periodic k-NN; 0: the global crop size.")
    knn_bn: str = setting(
        "running", "BatchNorm statistics of the periodic k-NN: running (the backbone's own buffers, as "
        "tools/eval_knn.py) or refresh (recomputed on the k-NN train split's clean images first, on a copy: a random "
        "initialisation's buffers describe no real activations, so the learning proof reads every network this way).",
        choices=KNN_BN_MODES)
    tensorboard: bool = setting(True, "Write TensorBoard events to output_dir/tb when tensorboard is installed.")
    collapse_window: int = setting(
        5, "Log lines in a row that must show collapse (one prototype for every image, uniform outputs, or embeddings "
        "pointing one way; see docs/learning-health.md) before the warning line.")
    stop_on_collapse: bool = setting(
        False, "End the run with a checkpoint when the collapse warning fires, instead of only warning.")

    def __post_init__(self) -> None:
        require_min(self, 1, "batch_size_per_gpu", "log_every", "saveckp_freq")
        require_min(self, 0, "num_workers", "max_steps", "epoch_length", "ckpt_every_steps", "knn_every",
                    "knn_input_size")
        if self.color_jitter is not None:
            require(min(self.color_jitter) >= 0 and self.color_jitter[3] <= 0.5,
                    f"--color_jitter {' '.join(map(str, self.color_jitter))}: strengths must be >= 0 and hue <= 0.5")
        require(self.knn_k >= 1, f"--knn_k must be >= 1, got {self.knn_k}")
        require(self.collapse_window >= 1, f"--collapse_window must be >= 1, got {self.collapse_window}")
        require(not self.knn_every or bool(self.knn_data), "--knn_every needs --knn_data (a folder with train and val splits)")
        for name, allowed in (("pipeline", PIPELINES), ("crop_resampler", RESAMPLERS), ("precision", PRECISIONS),
                              ("device", DEVICES), ("knn_bn", KNN_BN_MODES)):
            require(getattr(self, name) in allowed, f"--{name} {getattr(self, name)!r}: choose from {allowed}")
        if self.use_fp16 is not None:
            implied = "fp16" if self.use_fp16 else "fp32"
            require(
                self.precision in ("auto", implied),
                f"--use_fp16 {self.use_fp16} contradicts --precision {self.precision}; give one of them",
            )

    @property
    def warnings(self) -> list[str]:
        """Settings that run but are likely mistakes, printed at the start of the run; none here."""
        return []

    @property
    def resolved_precision(self) -> str:
        """``precision`` with ``--use_fp16`` applied; ``auto`` is left for the device to settle."""
        if self.use_fp16 is not None:
            return "fp16" if self.use_fp16 else "fp32"
        return self.precision
