"""A short MOKD run on real photographs lowers the loss and stays healthy; the health check catches collapse.

A falling total loss alone proves little: a collapsing run's loss falls too (towards 4 ln K per
model). So the test also asserts that the teachers' collapse monitors are healthy after training,
and the last two tests show that the same check fails on collapsed models of both kinds.
"""

import torch

from mokd_fast import MOKD
from mokd_fast.engine.collapse import CollapseWatch
from mokd_fast.sample_data.photos import sample_photos
from pipelines.batch import MultiCropBatch
from pipelines.pil_augment import augment_image
from pipelines.policy import MultiCropPolicy
from pipelines.torchvision import collate_views
from tests.conftest import small_config

PHOTOS = 8


def _batch(photos, policy: MultiCropPolicy, step: int) -> MultiCropBatch:
    """The reference pipeline's views of every photo (MOKD policy), normalised."""
    samples = [(augment_image(p, policy, torch.Generator().manual_seed(1000 * step + i)), 0) for i, p in enumerate(photos)]
    global_crops, local_crops, _ = collate_views(samples)
    mean, std = torch.tensor(policy.mean).view(1, 3, 1, 1), torch.tensor(policy.std).view(1, 3, 1, 1)
    return MultiCropBatch(*[(x.float() / 255 - mean) / std for x in (global_crops, local_crops)])


def _setup(**overrides: object) -> tuple[MOKD, list, MultiCropPolicy]:
    torch.manual_seed(0)
    cfg = small_config(out_dim=1024, **overrides)
    policy = MultiCropPolicy.mokd(cfg.global_size, cfg.local_size, (0.25, 1.0), (0.05, 0.25), cfg.local_crops_number)
    return MOKD(cfg), list(sample_photos().values())[:PHOTOS], policy


def _collapse_reasons(model: MOKD, batch: MultiCropBatch) -> tuple[dict[str, str], dict[str, float]]:
    """What the run's collapse watch would say of the teachers' monitors on ``batch`` (window of one)."""
    with torch.no_grad():
        _, teachers = model.forward_all(batch)
        values = {k: v.item() for k, v in model.monitors(teachers, epoch=0).items()}
    return CollapseWatch(window=1, log_k=model.collapse_log_k()).reasons(values), values


def test_loss_goes_down_and_the_teachers_stay_healthy_on_real_photographs() -> None:
    model, photos, policy = _setup()
    # At 3e-4 for the CNN as well, its teacher's per-image entropy reaches 98.4% of ln K in 30 steps (uniform
    # collapse, which the check below catches) while the loss still falls 120 -> 64.
    groups = [{"params": [p for p in branch.parameters() if p.requires_grad], "lr": lr}
              for branch, lr in ((model.students.cnn, 1e-4), (model.students.vit, 3e-4))]
    opt = torch.optim.AdamW(groups, weight_decay=0.04)
    totals = []
    for step in range(30):
        terms = model.loss_terms(_batch(photos, policy, step), epoch=0)
        opt.zero_grad()
        cnn, vit = model.backward(terms)
        opt.step()
        model.update_teachers(model.cfg.momentum_teacher)
        totals.append((cnn + vit).item())
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    # Measured: ~120 -> ~77. Random augmentations make single steps noisy, so compare 5-step means.
    assert last < 0.75 * first, f"total loss went {first:.2f} -> {last:.2f}"
    reasons, values = _collapse_reasons(model, _batch(photos, policy, 99))
    assert not reasons, f"collapsed after 30 steps: {reasons}"
    for name in ("cnn", "vit"):  # margins, not just the warning thresholds
        assert values[f"teacher_{name}_spread"] > 0.2, values
        assert values[f"teacher_{name}_distinct"] >= 2 / PHOTOS, values


def test_the_health_check_fails_on_uniform_teachers() -> None:
    """A teacher temperature of 100 flattens every target: DINO's uniform collapse."""
    model, photos, policy = _setup(warmup_teacher_temp=100.0, teacher_temp=100.0)
    reasons, _ = _collapse_reasons(model, _batch(photos, policy, 0))
    assert set(reasons) == {"teacher_cnn", "teacher_vit"}
    assert all(why.startswith("uniform outputs") for why in reasons.values())


def test_the_health_check_fails_when_every_image_gets_the_same_output() -> None:
    """A CNN teacher whose head ignores its input: one output for every image."""
    model, photos, policy = _setup()
    with torch.no_grad():
        model.teachers.cnn.head.mlp[0].weight.zero_()
    reasons, values = _collapse_reasons(model, _batch(photos, policy, 0))
    assert set(reasons) == {"teacher_cnn"}, reasons
    rows = 2 * PHOTOS  # the two global crops of every photo
    assert values["teacher_cnn_spread"] < 1e-3 and values["teacher_cnn_distinct"] == 1 / rows
