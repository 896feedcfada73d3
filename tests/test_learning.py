"""A few dozen optimizer steps on real photographs lower MOKD's total loss."""

import torch

from mokd_fast import MOKD
from mokd_fast.sample_images import sample_photos
from pipelines.batch import MultiCropBatch
from pipelines.pil_augment import augment_image
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import collate_views
from tests.conftest import small_config


def _batch(photos, policy: MultiCropPolicy, step: int) -> MultiCropBatch:
    """The reference pipeline's views of every photo (MOKD policy), normalised."""
    samples = [(augment_image(p, policy, torch.Generator().manual_seed(1000 * step + i)), 0) for i, p in enumerate(photos)]
    global_crops, local_crops, _ = collate_views(samples)
    mean, std = torch.tensor(policy.mean).view(1, 3, 1, 1), torch.tensor(policy.std).view(1, 3, 1, 1)
    return MultiCropBatch(*[(x.float() / 255 - mean) / std for x in (global_crops, local_crops)])


def test_total_loss_goes_down_on_real_photographs() -> None:
    torch.manual_seed(0)
    photos = list(sample_photos().values())[:8]
    cfg = small_config(out_dim=1024)
    model = MOKD(cfg)
    opt = torch.optim.AdamW([p for p in model.students.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.04)
    policy = MultiCropPolicy.mokd(cfg.global_size, cfg.local_size, (0.25, 1.0), (0.05, 0.25), cfg.local_crops_number)
    totals = []
    for step in range(30):
        terms = model.loss_terms(_batch(photos, policy, step), epoch=0)
        opt.zero_grad()
        cnn, vit = model.backward(terms)
        opt.step()
        model.update_teachers(cfg.momentum_teacher)
        totals.append((cnn + vit).item())
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    # Measured: ~120 -> ~64. Random augmentations make single steps noisy, so compare 5-step means.
    assert last < 0.75 * first, f"total loss went {first:.2f} -> {last:.2f}"
