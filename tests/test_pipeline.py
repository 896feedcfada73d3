"""The reference pipeline: the official policy, draw for draw; sampling; batches independent of workers."""

import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision import transforms

from mokd_fast.sample_data.photos import sample_photos
from pipelines.pil_augment import augment_view
from pipelines.policy import IMAGENET_MEAN, IMAGENET_STD, MultiCropPolicy, ViewPolicy
from pipelines.sampler import ResumableDistributedSampler
from pipelines.torchvision import (
    MultiCropFolder,
    TorchvisionPipeline,
    load_rgb,
    open_image_folder,
)


def test_policy_is_the_official_one():
    policy = MultiCropPolicy.mokd(224, 96, (0.25, 1.0), (0.05, 0.25), 8)
    g1, g2 = policy.global_views
    assert (g1.size, g1.scale, g1.blur_p, g1.solarize_p) == (224, (0.25, 1.0), 1.0, 0.0)
    assert (g2.size, g2.blur_p, g2.solarize_p) == (224, 0.1, 0.2)
    local = policy.local_view
    assert (local.size, local.scale, local.blur_p, local.solarize_p) == (96, (0.05, 0.25), 0.5, 0.0)
    for view in policy.views():
        assert view.jitter == (0.4, 0.4, 0.2, 0.1) and view.jitter_p == 0.8 and view.grayscale_p == 0.2
        assert view.flip_p == 0.5 and view.interpolation == "bicubic" and view.blur_sigma == (0.1, 2.0)
    assert len(policy.views()) == 10


def test_view_draws_equal_torchvision_transforms_pixel_for_pixel():
    """Crop, flip, jitter and grayscale take the same draws from a seeded generator as torchvision's
    classes take from the global RNG, so the same seed gives the same pixels."""
    image = sample_photos()["chelsea"]
    view = ViewPolicy(96, (0.05, 0.4), blur_p=0.0)
    official = transforms.Compose([
        transforms.RandomResizedCrop(96, scale=(0.05, 0.4), interpolation=Image.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.PILToTensor(),
    ])
    for seed in range(12):
        torch.manual_seed(seed)
        expected = official(image)
        assert torch.equal(augment_view(image, view, torch.Generator().manual_seed(seed)), expected), seed


def test_sampler_matches_distributed_sampler_and_resumes_mid_epoch():
    n, batch, world = 23, 3, 2
    samplers = [ResumableDistributedSampler(n, batch, world, rank, seed=5) for rank in range(world)]
    for rank, ours in enumerate(samplers):
        ours.set_epoch(4)
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=5)
        ref.set_epoch(4)
        full = list(ref)
        assert ours.batches_per_epoch == len(full) // batch == 4  # same count on every rank
        assert ours.indices() == full[: 4 * batch]
        assert [e for _, e in ours] == [4] * 12
        ours.set_epoch(4, start_batch=3)
        assert ours.indices() == full[3 * batch : 4 * batch]


def test_pipeline_batches_are_normalised_views_and_do_not_depend_on_workers(photo_folder):
    policy = MultiCropPolicy.mokd(64, 32, (0.25, 1.0), (0.05, 0.25), 2)
    cpu = torch.device("cpu")
    zero = TorchvisionPipeline(photo_folder, policy, 4, 1, 0, seed=3, num_workers=0, device=cpu)
    two = TorchvisionPipeline(photo_folder, policy, 4, 1, 0, seed=3, num_workers=2, device=cpu)
    assert len(zero) == 4
    batches = list(zero.epoch(1))
    assert len(batches) == 4
    for a, b in zip(batches, two.epoch(1)):
        assert torch.equal(a.global_crops, b.global_crops) and torch.equal(a.local_crops, b.local_crops)
    first = batches[0]
    assert first.global_crops.shape == (8, 3, 64, 64) and first.local_crops.shape == (8, 3, 32, 32)
    assert first.global_crops.dtype == torch.float32 and first.labels.shape == (4,)
    # The same float32 maths as ToTensor + Normalize, applied to the view the worker drew.
    folder = open_image_folder(photo_folder)
    sampler = ResumableDistributedSampler(len(folder), 4, 1, 0, seed=3)
    sampler.set_epoch(1)
    index = sampler.indices()[1]

    views, label = MultiCropFolder(folder, policy, seed=3, rank=0)[(index, 1)]
    reference = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)(transforms.ToTensor()(
        Image.fromarray(views[1].permute(1, 2, 0).numpy())))
    assert torch.equal(first.global_crops[4 + 1], reference)  # view 2 of sample 1 (view-major)
    assert first.labels[1].item() == label
    # Mid-epoch start yields the tail of the same epoch.
    tail = list(zero.epoch(1, start_batch=2))
    assert len(tail) == 2 and torch.equal(tail[0].local_crops, batches[2].local_crops)


def test_each_rank_draws_its_own_augmentations(photo_folder):
    policy = MultiCropPolicy.mokd(64, 32, (0.25, 1.0), (0.05, 0.25), 2)
    folder = open_image_folder(photo_folder)

    rank0 = MultiCropFolder(folder, policy, seed=0, rank=0)[(5, 0)][0]
    rank1 = MultiCropFolder(folder, policy, seed=0, rank=1)[(5, 0)][0]
    again = MultiCropFolder(folder, policy, seed=0, rank=0)[(5, 0)][0]
    next_epoch = MultiCropFolder(folder, policy, seed=0, rank=0)[(5, 1)][0]
    assert all(torch.equal(a, b) for a, b in zip(rank0, again))
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[0], next_epoch[0])


def test_undecodable_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(RuntimeError, match="remove or replace") as err:
        load_rgb(str(bad))
    assert str(bad) in str(err.value)
