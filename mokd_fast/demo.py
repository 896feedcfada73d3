"""The end-to-end demo: real photographs, converted for DALI, then a real MOKD pre-training on CPU.

``python -m mokd_fast.demo`` (or ``./run.sh demo``) writes ``demo_output/photos`` (one class per
photograph bundled with scikit-image, varied crops and sizes, saved as JPEG), converts it with
``tools/convert_dataset.py --format dali`` into ``demo_output/photos-dali`` (the whole user path:
the DALI pipeline is the fastest backend measured on CPU), then runs ``train.py`` with
``configs/demo_cpu.yaml`` and the default ``--pipeline auto`` into ``demo_output/run``: resnet18 +
vit_tiny, progress bar with samples/s, log.jsonl, TensorBoard events and checkpoints. Extra
arguments go to ``train.py``.
"""

import shutil
import sys
from pathlib import Path

from mokd_fast.cli import main as train_main
from mokd_fast.convert.cli import main as convert_main
from mokd_fast.sample_images import write_image_folder

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Builds the photo folder and trains on it; returns train.py's exit status."""
    root = Path("demo_output")
    photos = write_image_folder(root / "photos", images_per_class=12)
    print(f"wrote {sum(1 for _ in photos.rglob('*.jpg'))} JPEGs in {len(list(photos.iterdir()))} classes to {photos}")
    shards, run = root / "photos-dali", root / "run"
    for previous in (shards, run):
        if previous.exists():
            print(f"replacing the previous {previous}")
            shutil.rmtree(previous)
    status = convert_main([str(photos), str(shards), "--format", "dali", "--workers", "2"])
    if status != 0:
        return status
    return train_main([
        "--config", str(REPO / "configs/demo_cpu.yaml"), "--data_path", str(shards), "--output_dir", str(run),
        *(sys.argv[1:] if argv is None else argv),
    ])


if __name__ == "__main__":
    sys.exit(main())
