"""The end-to-end demo: real photographs, converted for DALI, then a real pre-training on CPU.

``python -m mokd_fast.demo`` (or ``./run.sh demo``) writes ``demo_output/photos`` (one class per
photograph bundled with scikit-image, varied crops and sizes, saved as JPEG), converts it with
``tools/convert_dataset.py --format dali`` into ``demo_output/photos-dali`` (the whole user path:
the DALI pipeline is the fastest backend measured on CPU), then runs ``train.py`` with the method's
demo recipe and the default ``--pipeline auto``: MOKD (``configs/demo_cpu.yaml``, resnet18 +
vit_tiny) into ``demo_output/run``; with ``--method dogo`` DoGo (``configs/demo_dogo_cpu.yaml``,
two ResNet-18 peers) into ``demo_output/run-dogo``; with ``--method seed`` SEED
(``configs/demo_seed_cpu.yaml``: the MOKD demo's CNN teacher distilled into a MobileNetV3, after
running the MOKD demo if its checkpoint is not there) into ``demo_output/run-seed``; with
``--method mcl`` MCL-MoCo (``configs/demo_mcl_cpu.yaml``, two ResNet-18 peers) into
``demo_output/run-mcl``; with ``--method lmcl`` L-MCL (``configs/demo_lmcl_cpu.yaml``, two ResNet-18
classifiers on the photographs' classes, read by the nvjpeg pipeline) into ``demo_output/run-lmcl``. Progress bar with samples/s, log.jsonl, TensorBoard events and
checkpoints. Extra arguments go to ``train.py``.
"""

import argparse
import shutil
import sys
from pathlib import Path

from mokd_fast.cli import main as train_main
from mokd_fast.convert.cli import main as convert_main
from mokd_fast.sample_data.photos import write_image_folder

REPO = Path(__file__).resolve().parents[1]
# --method -> (demo recipe, run directory under demo_output)
DEMOS = {"mokd": ("configs/demo_cpu.yaml", "run"), "dogo": ("configs/demo_dogo_cpu.yaml", "run-dogo"),
         "seed": ("configs/demo_seed_cpu.yaml", "run-seed"), "mcl": ("configs/demo_mcl_cpu.yaml", "run-mcl"),
         "lmcl": ("configs/demo_lmcl_cpu.yaml", "run-lmcl")}
TEACHER_DEMO = {"seed": "mokd"}  # methods that distil another demo's result -> that demo


def main(argv: list[str] | None = None) -> int:
    """Builds the photo folder and trains on it; returns train.py's exit status."""
    args = sys.argv[1:] if argv is None else argv
    picker = argparse.ArgumentParser(add_help=False)
    picker.add_argument("--method", choices=tuple(DEMOS), default="mokd")
    method = picker.parse_known_args(args)[0].method
    recipe, run_name = DEMOS[method]
    root = Path("demo_output")
    if method in TEACHER_DEMO and "--teacher" not in args:
        source = TEACHER_DEMO[method]
        teacher = root / DEMOS[source][1] / "checkpoint.pth"
        if not teacher.is_file():
            print(f"{method} distils a pre-trained teacher: running the {source} demo first")
            status = main(["--method", source])
            if status != 0:
                return status
        args = [*args, "--teacher", str(teacher)]
    photos = write_image_folder(root / "photos", images_per_class=12)
    print(f"wrote {sum(1 for _ in photos.rglob('*.jpg'))} JPEGs in {len(list(photos.iterdir()))} classes to {photos}")
    shards, run = root / "photos-dali", root / run_name
    for previous in (shards, run):
        if previous.exists():
            print(f"replacing the previous {previous}")
            shutil.rmtree(previous)
    status = convert_main([str(photos), str(shards), "--format", "dali", "--workers", "2"])
    if status != 0:
        return status
    return train_main([
        "--config", str(REPO / recipe), "--data_path", str(shards), "--output_dir", str(run), *args,
    ])


if __name__ == "__main__":
    sys.exit(main())
