"""The end-to-end demo: a small ImageFolder of real photographs, then a real MOKD pre-training on CPU.

``python -m mokd_fast.demo`` (or ``./run.sh demo``) writes ``demo_output/photos`` (one class per
photograph bundled with scikit-image, varied crops and sizes, saved as JPEG), then runs ``train.py``
with ``configs/demo_cpu.yaml`` into ``demo_output/run``: resnet18 + vit_tiny, progress bar with
samples/s, log.jsonl, TensorBoard events and checkpoints. Extra arguments go to ``train.py``.
"""

import shutil
import sys
from pathlib import Path

from mokd_fast.cli import main as train_main
from mokd_fast.sample_images import write_image_folder

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Builds the photo folder and trains on it; returns train.py's exit status."""
    root = Path("demo_output")
    photos = write_image_folder(root / "photos", images_per_class=12)
    print(f"wrote {sum(1 for _ in photos.rglob('*.jpg'))} JPEGs in {len(list(photos.iterdir()))} classes to {photos}")
    run = root / "run"
    if run.exists():
        print(f"replacing the previous demo run in {run}")
        shutil.rmtree(run)
    return train_main([
        "--config", str(REPO / "configs/demo_cpu.yaml"), "--data_path", str(photos), "--output_dir", str(run),
        *(sys.argv[1:] if argv is None else argv),
    ])


if __name__ == "__main__":
    sys.exit(main())
