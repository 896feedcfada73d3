"""The evaluation tools' command lines, torch-free: ``--help`` and flag errors answer at once.

Each ``*_main`` parses its flags here and only then imports the tool's runner (torch, timm, the
models), so ``python tools/eval_knn.py --help`` costs an interpreter start, not a torch import.
"""

import argparse
import importlib

from mokd_fast.core.settings import TRUST_FLAG, TRUST_HELP, bool_flag

DATA_FORMATS = ("auto", "imagefolder", "ffcv", "dali")
AVGPOOL_CHOICES = (0, 1, 2)
EXPORT_FORMATS = ("timm", "torchvision", "official")
CHECKPOINT_KEYS = (  # for the help texts; any key a checkpoint has works
    "teacher_cnn", "teacher_vit", "student_cnn", "student_vit", "peer_1", "peer_2",
                   "student", "net_1", "net_2")  # MOKD, DoGo and MCL, SEED, L-MCL


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The official evaluation flags both tools take, plus data format, device and precision."""
    add = parser.add_argument
    add("--arch", default=None, help="Backbone: an official alias (resnet50, vit_small, ...) or a timm name. "
        "Default: the checkpoint's arch_cnn/arch_vit.")
    add("--patch_size", type=int, default=None, help="ViT patch size; default: read from the weights.")
    add("--pretrained_weights", default="", help="Checkpoint to evaluate (ours, the official one, or a "
        "tools/export.py file); empty: the random initialisation of --arch.")
    add(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    add("--checkpoint_key", default="teacher_cnn", help=f"Model inside the checkpoint: {', '.join(CHECKPOINT_KEYS)}.")
    add("--data_path", required=True, help="Folder with train and val splits (ImageFolders or converter outputs).")
    add("--data_format", default="auto", choices=DATA_FORMATS, help="How to read the splits; auto detects each.")
    add("--input_size", type=int, default=224, help="Centre-crop (and training crop) side.")
    add("--resize_size", type=int, default=None, help="Shorter side before the centre crop; default 256/224 x input_size.")
    add("--avgpool_patchtokens", type=int, default=0, choices=AVGPOOL_CHOICES, help="ViT: 0 CLS token, 1 mean "
        "patch token (k-NN) or CLS + mean (linear: appended), 2 their sum (k-NN).")
    add("--batch_size_per_gpu", type=int, default=128, help="Images per batch and process.")
    add("--num_workers", type=int, default=10, help="Loader workers per process.")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where the backbone runs.")
    add("--precision", default="auto", choices=("auto", "fp32", "bf16"),
        help="Backbone autocast; auto is bf16 on CUDA, fp32 on CPU. Features are kept in float32.")
    add("--dump_features", default=None, help="Save the extracted features here (official file names).")
    add("--load_features", default=None, help="Read features saved by --dump_features instead of extracting.")
    add("--output_dir", default=".", help="Where the JSON results (and the linear classifier) go.")
    add("--dist_url", default="env://", help="torch.distributed init method (torchrun sets env://).")
    add("--seed", type=int, default=0, help="Seed of the shuffles and random crops.")
    add("--use_cuda", type=bool_flag, default=True, help="Keep the feature matrices on the GPU (False: CPU, "
        "for datasets whose features do not fit).")


def knn_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "eval_knn", description="k-NN classification of a pre-trained backbone's frozen features (DINO's "
        "weighted voting). Prints top-1/top-5 per k and writes them to OUTPUT_DIR/knn.json.")
    add_common_flags(parser)
    parser.add_argument("--nb_knn", nargs="+", type=int, default=[10, 20, 100, 200], help="Neighbour counts.")
    parser.add_argument("--temperature", type=float, default=0.07, help="Voting temperature.")
    return parser


def linear_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "eval_linear", description="Linear probe on a pre-trained backbone's frozen features (official recipe: "
        "SGD momentum 0.9, no weight decay, lr x batch/256, cosine to 0 over the epochs, random-resized crops and "
        "flips). Writes OUTPUT_DIR/linear.pth (resumed when present), linear_log.jsonl and linear.json.")
    add_common_flags(parser)
    add = parser.add_argument
    add("--n_last_blocks", type=int, default=4, help="ViT: concatenate the CLS tokens of this many last blocks "
        "(4 for ViT-S, 1 for ViT-B in DINO).")
    add("--epochs", type=int, default=100, help="Training epochs.")
    add("--lr", type=float, default=0.001, help="Learning rate per 256 images (scaled by the global batch).")
    add("--optimizer", default="sgd", choices=("sgd", "lars"), help="SGD (official default) or LARS.")
    add("--val_freq", type=int, default=5, help="Validate every this many epochs (and after the last).")
    add("--cached_features", action="store_true", help="Train on centre-crop features extracted once instead of "
        "fresh random crops each epoch: one backbone pass instead of one per epoch, no augmentation (not the "
        "official recipe; usually a little lower accuracy).")
    add("--evaluate", default=None, help="Only validate this saved linear.pth.")
    return parser


def export_parser() -> argparse.ArgumentParser:
    """``tools/export.py``'s flags."""
    parser = argparse.ArgumentParser("export", description="Export a pre-trained backbone for timm, torchvision "
                                     "or the official evaluation scripts.")
    parser.add_argument("checkpoint", help="Training checkpoint (ours or official), an export, or a .safetensors file.")
    parser.add_argument("out", help="Output file (.pth; .safetensors for --format timm/torchvision).")
    parser.add_argument("--key", default="teacher_cnn", help=f"Model to export: {', '.join(CHECKPOINT_KEYS)}.")
    parser.add_argument("--format", default="timm", choices=EXPORT_FORMATS, help="Target layout.")
    parser.add_argument("--arch", default=None, help="Architecture, when the checkpoint does not record it.")
    parser.add_argument(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    return parser


def classifiers_parser() -> argparse.ArgumentParser:
    """``tools/eval_classifiers.py``'s flags."""
    parser = argparse.ArgumentParser(prog="eval_classifiers.py", description="Top-1/top-5 of every classifier of a supervised (L-MCL) checkpoint on a labelled split, as the official test(): shorter side to 256, centre crop 224.")
    parser.add_argument("--checkpoint", required=True, help="An L-MCL training checkpoint (train.py --method lmcl).")
    parser.add_argument("--data_path", required=True,
                        help="The labelled split to evaluate: an ImageFolder (class folders named as in training) or "
                             "its tools/convert_dataset.py output.")
    parser.add_argument("--input_size", type=int, default=224, help="Centre-crop side (official 224).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=4)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available.")
    parser.add_argument("--output_dir", default=".", help="Where classifiers.json goes.")
    parser.add_argument(TRUST_FLAG, action="store_true", help=TRUST_HELP)
    return parser


def _main(parser: argparse.ArgumentParser, runner: str, argv: list[str] | None) -> int:
    """Parses ``argv`` and only then imports the tool's runner (torch, timm, the models) and runs it."""
    args = parser.parse_args(argv)
    return importlib.import_module(runner).run(args)


def knn_main(argv: list[str] | None = None) -> int:
    """``tools/eval_knn.py``; returns the exit status (2 for a usage error, with the message on stderr)."""
    return _main(knn_parser(), "mokd_fast.eval.knn_cli", argv)


def linear_main(argv: list[str] | None = None) -> int:
    """``tools/eval_linear.py``; returns the exit status (2 for a usage error, with the message on stderr)."""
    return _main(linear_parser(), "mokd_fast.eval.linear_cli", argv)


def export_main(argv: list[str] | None = None) -> int:
    """``tools/export.py``; returns the exit status (2 for a usage error)."""
    return _main(export_parser(), "mokd_fast.eval.export", argv)


def classifiers_main(argv: list[str] | None = None) -> int:
    """``tools/eval_classifiers.py``; returns the exit status (2 for a usage error)."""
    return _main(classifiers_parser(), "mokd_fast.eval.classify", argv)
