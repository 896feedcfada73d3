"""The learning proof's floor: DINO's weighted k-NN on raw pixels, how much the images alone tell the class.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mokd_fast.eval.knn import knn_classify
from mokd_fast.eval.periodic import TEMPERATURE
from mokd_fast.sample_data.shapes import CLASSES


def _pixels(split: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``([N, 3 S S] L2-normalised, per-image-centred pixels, [N] labels)`` of an ImageFolder in class order."""
    rows, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((split / name).glob("*.jpg")):
            x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).reshape(-1)
            rows.append(x - x.mean())
            labels.append(label)
    return F.normalize(torch.from_numpy(np.stack(rows)), dim=1), torch.tensor(labels)

def pixel_knn(data: Path, k: int) -> float:
    """Top-1 (percent) of the weighted k-NN on raw pixels: how much the images' pixels alone tell the class."""
    train_x, train_y = _pixels(data / "train")
    val_x, val_y = _pixels(data / "val")
    return knn_classify(train_x, train_y, val_x, val_y, [k], TEMPERATURE, len(CLASSES))[k][0]
