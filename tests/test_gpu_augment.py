"""Batched multi-crop ops (pipelines/gpu_augment.py) against torchvision and the policy, on CPU."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from mokd_fast.sample_data.photos import sample_photos
from pipelines.gpu_augment import (
    BatchedMultiCrop,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    sample_crop_boxes,
    sample_view_params,
)
from pipelines.policy import MultiCropPolicy, ViewPolicy
from tests.helpers import ks_statistic

N = 4000


@pytest.mark.parametrize(("height", "width", "scale"), [(300, 400, (0.25, 1.0)), (375, 500, (0.05, 0.25)), (900, 120, (0.25, 1.0))])
def test_crop_boxes_follow_random_resized_crop(height, width, scale):
    view = ViewPolicy(96, scale)
    boxes = sample_crop_boxes(torch.full((N,), height), torch.full((N,), width), view, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = boxes.double().unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    assert torch.equal(boxes, boxes.round())
    torch.manual_seed(0)
    ref = np.array([RandomResizedCrop.get_params(torch.empty(3, height, width), list(scale), [3 / 4, 4 / 3]) for _ in range(N)])
    ours_area, ref_area = ((x2 - x1) * (y2 - y1)).numpy() / (height * width), ref[:, 2] * ref[:, 3] / (height * width)
    ours_aspect, ref_aspect = np.log(((x2 - x1) / (y2 - y1)).numpy()), np.log(ref[:, 3] / ref[:, 2])
    critical = 1.63 * math.sqrt(2 / N)  # alpha = 0.01
    assert ks_statistic(ours_area, ref_area) < critical and ks_statistic(ours_aspect, ref_aspect) < critical
    ours_left = (x1 / (width - (x2 - x1) + 1)).numpy()  # position uniform over the free range
    assert abs(ours_left.mean() - 0.5) < 0.03 or (x2 - x1 == width).all()


def test_coins_match_the_policy_probabilities():
    n = 20000
    policy = MultiCropPolicy.mokd(224, 96, (0.25, 1.0), (0.05, 0.25), 8)
    sizes = torch.full((n,), 400)
    for view in policy.views()[:3]:
        p = sample_view_params(sizes, sizes, view, torch.Generator().manual_seed(1))
        for flag, prob in (("flip", view.flip_p), ("jitter", view.jitter_p), ("gray", view.grayscale_p),
                           ("blur", view.blur_p), ("solarize", view.solarize_p)):
            rate = getattr(p, flag).double().mean().item()
            assert abs(rate - prob) <= 4 * math.sqrt(prob * (1 - prob) / n) + 1e-12, (flag, rate, prob)
        b, c, s, h = view.jitter
        lows, highs = torch.tensor([1 - b, 1 - c, 1 - s, -h]), torch.tensor([1 + b, 1 + c, 1 + s, h])
        assert (p.factors >= lows).all() and (p.factors <= highs).all()
        assert (p.sigma >= view.blur_sigma[0]).all() and (p.sigma <= view.blur_sigma[1]).all()
        assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    g1, g2, local = policy.views()[:3]
    assert g1.blur_p == 1.0 and g1.solarize_p == 0 and g2.solarize_p == 0.2 and local.solarize_p == 0


def test_photometric_ops_equal_torchvision():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 20, 24, generator=gen)
    x[:, :, 0] = x[:, :1, 0]  # gray pixels: hue undefined, must stay unchanged
    x[:, 1, 1] = x[:, 0, 1]  # ties between the largest channels
    factors = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4, 0.7])
    shifts = torch.tensor([-0.1, -0.03, 0.0, 0.02, 0.07, 0.1])
    for i in range(6):
        one = x[i : i + 1]
        for ours, ref in ((adjust_brightness, TF.adjust_brightness), (adjust_contrast, TF.adjust_contrast),
                          (adjust_saturation, TF.adjust_saturation)):
            torch.testing.assert_close(ours(x, factors)[i : i + 1], ref(one, factors[i].item()), rtol=0, atol=1e-6)
        torch.testing.assert_close(adjust_hue(x, shifts)[i : i + 1], TF.adjust_hue(one, shifts[i].item()), rtol=0, atol=1e-5)
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x), rtol=0, atol=1e-6)
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.3])
    for radius in (6, 9):  # taps beyond a sample's own radius weigh nothing
        blurred = gaussian_blur(x, sigmas, radius)
        for i in range(6):
            size = 2 * math.ceil(3 * sigmas[i].item()) + 1
            ref = TF.gaussian_blur(x[i : i + 1], kernel_size=[size, size], sigma=[sigmas[i].item()] * 2)
            torch.testing.assert_close(blurred[i : i + 1], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("resampler", ["roi_align", "resize"])
def test_a_full_image_crop_is_a_resize(resampler):
    image = (torch.linspace(0, 1, 120 * 160).view(1, 1, 120, 160).expand(1, 3, 120, 160) * 255).round().to(torch.uint8)
    plain = ViewPolicy(64, (1.0, 1.0), ratio=(160 / 120, 160 / 120), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    policy = MultiCropPolicy(global_views=(plain, plain), local_view=plain, local_crops_number=1, mean=(0, 0, 0), std=(1, 1, 1))
    batch = BatchedMultiCrop(policy, torch.device("cpu"), resampler=resampler)(
        image, torch.tensor([120]), torch.tensor([160]), torch.Generator().manual_seed(0))
    ref = TF.resize(image.float() / 255, [64, 64], antialias=True)
    torch.testing.assert_close(batch.local_crops, ref, rtol=0, atol=0.01)


def test_resize_resampler_matches_pil_resized_crops():
    """The CPU resampler crops whole pixels and resizes like the reference (PIL crop, then bicubic), within 1 level."""
    photo = torch.from_numpy(np.array(sample_photos()["astronaut"].resize((300, 260)))).permute(2, 0, 1).contiguous()
    view = ViewPolicy(48, (0.05, 0.5), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    policy = MultiCropPolicy(global_views=(view, view), local_view=view, local_crops_number=2, mean=(0, 0, 0), std=(1, 1, 1))
    crops = BatchedMultiCrop(policy, torch.device("cpu"), resampler="resize")
    canvas = torch.zeros(1, 3, 320, 320, dtype=torch.uint8)
    canvas[0, :, :260, :300] = photo
    batch = crops(canvas.contiguous(memory_format=torch.channels_last), torch.tensor([260]), torch.tensor([300]),
                  torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)  # the draws BatchedMultiCrop makes, in its order
    params = [sample_view_params(torch.tensor([260]), torch.tensor([300]), v, gen) for v in policy.views()]
    assert params[0].boxes.tolist() != params[1].boxes.tolist()
    image = Image.fromarray(photo.permute(1, 2, 0).numpy())
    for i, p in enumerate(params[:2]):
        x1, y1, x2, y2 = p.boxes[0].tolist()
        ref = np.asarray(image.crop((x1, y1, x2, y2)).resize((48, 48), Image.Resampling.BICUBIC)).astype(np.float32)
        ours = (batch.global_crops[i].permute(1, 2, 0) * 255).numpy()
        assert np.abs(ours - ref).max() <= 1.0 + 1e-3


def test_resamplers_agree_on_smooth_images():
    """roi_align (bilinear, area-averaged) and resize (bicubic, antialiased) differ only by their filters."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 90), torch.linspace(0, 1, 110), indexing="ij")
    image = torch.stack([xx, yy, (xx + yy) / 2]).mul(255).round().to(torch.uint8)[None].repeat(3, 1, 1, 1)
    policy = MultiCropPolicy.mokd(40, 24, (0.25, 1.0), (0.05, 0.25), 2)
    sizes = torch.tensor([90, 90, 90]), torch.tensor([110, 110, 110])
    a = BatchedMultiCrop(policy, torch.device("cpu"), resampler="roi_align")(image, *sizes, torch.Generator().manual_seed(1))
    b = BatchedMultiCrop(policy, torch.device("cpu"), resampler="resize")(image, *sizes, torch.Generator().manual_seed(1))
    assert (a.global_crops - b.global_crops).abs().mean() < 0.02 and (a.local_crops - b.local_crops).abs().mean() < 0.02


def test_batched_multicrop_delivers_the_batch_contract():
    policy = MultiCropPolicy.mokd(32, 16, (0.25, 1.0), (0.05, 0.25), 3)
    gen = torch.Generator().manual_seed(3)
    canvas = torch.randint(0, 256, (5, 3, 60, 70), dtype=torch.uint8, generator=gen)
    heights, widths = torch.tensor([60, 50, 41, 60, 33]), torch.tensor([70, 70, 20, 35, 64])
    crops = BatchedMultiCrop(policy, torch.device("cpu"), channels_last=True)
    batch = crops(canvas, heights, widths, torch.Generator().manual_seed(7))
    again = crops(canvas, heights, widths, torch.Generator().manual_seed(7))
    assert batch.global_crops.shape == (10, 3, 32, 32) and batch.local_crops.shape == (15, 3, 16, 16)
    assert batch.global_crops.dtype == torch.float32
    assert batch.global_crops.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch.global_crops, again.global_crops) and torch.equal(batch.local_crops, again.local_crops)
    lo = (0 - torch.tensor(policy.mean)) / torch.tensor(policy.std)
    hi = (1 - torch.tensor(policy.mean)) / torch.tensor(policy.std)
    per_channel = batch.local_crops.permute(1, 0, 2, 3).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()
    # A crop only sees its own image: a sample whose image is black stays black before normalisation.
    canvas[2] = 0
    black = crops(canvas, heights, widths, torch.Generator().manual_seed(7))
    raw = black.local_crops * torch.tensor(policy.std).view(1, 3, 1, 1) + torch.tensor(policy.mean).view(1, 3, 1, 1)
    assert raw[[2, 7, 12]].abs().max() < 1e-5


@pytest.mark.parametrize("resampler", ["roi_align", "resize"])
def test_enlarged_crops_never_see_the_canvas_beyond_their_image(resampler):
    small = ViewPolicy(48, (0.05, 0.1), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    policy = MultiCropPolicy(global_views=(small, small), local_view=small, local_crops_number=2)
    canvas = torch.full((4, 3, 64, 64), 255, dtype=torch.uint8)  # beyond the images: white
    heights, widths = torch.tensor([20, 33, 64, 10]), torch.tensor([25, 64, 17, 12])
    for b in range(4):
        canvas[b, :, : heights[b], : widths[b]] = 40
    batch = BatchedMultiCrop(policy, torch.device("cpu"), resampler=resampler)(canvas, heights, widths,
                                                                               torch.Generator().manual_seed(0))
    std, mean = torch.tensor(policy.std).view(1, 3, 1, 1), torch.tensor(policy.mean).view(1, 3, 1, 1)
    for crops in (batch.global_crops, batch.local_crops):
        torch.testing.assert_close(crops * std + mean, torch.full_like(crops, 40 / 255), rtol=0, atol=1e-5)


def test_gathered_and_masked_forms_give_the_same_views():
    policy = MultiCropPolicy.mokd(32, 16, (0.25, 1.0), (0.05, 0.25), 4)
    gen = torch.Generator().manual_seed(4)
    canvas = torch.randint(0, 256, (6, 3, 50, 60), dtype=torch.uint8, generator=gen)
    heights, widths = torch.tensor([50, 40, 31, 50, 25, 48]), torch.tensor([60, 60, 22, 41, 60, 33])
    cpu = torch.device("cpu")
    a = BatchedMultiCrop(policy, cpu, gather=True)(canvas, heights, widths, torch.Generator().manual_seed(9))
    b = BatchedMultiCrop(policy, cpu, gather=False)(canvas, heights, widths, torch.Generator().manual_seed(9))
    torch.testing.assert_close(a.global_crops, b.global_crops, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.local_crops, b.local_crops, rtol=0, atol=1e-5)
