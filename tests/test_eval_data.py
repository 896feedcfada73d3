"""Evaluation splits: the three formats give the same centre crops and labels; bad layouts are named."""

import shutil

import pytest
import torch

from mokd_fast.core.errors import UsageError
from mokd_fast.eval.data import open_splits, rank_batches, split_batches


def _images_by_index(split, world_size: int = 1, rank: int = 0, batch_size: int = 3):
    images, labels = {}, {}
    count = 0
    for x, y, index in split_batches(split, 32, 40, False, batch_size, rank, world_size, torch.device("cpu"), 1):
        count += 1
        for i, img, lab in zip(index.tolist(), x, y.tolist()):
            if i >= 0:
                images[i], labels[i] = img, lab
    return images, labels, count


@pytest.mark.parametrize("fmt", ["ffcv", "dali"])
def test_converted_splits_give_the_imagefolder_centre_crops(converted_folders, fmt):
    ref_train, ref_val, _ = open_splits(converted_folders["imagefolder"])
    train, val, val_to_train = open_splits(converted_folders[fmt])
    assert train.format == fmt and train.classes == ref_train.classes
    assert torch.equal(val_to_train, torch.arange(4))
    for ref, split in ((ref_train, train), (ref_val, val)):
        want, want_labels, _ = _images_by_index(ref)
        got, got_labels, batches = _images_by_index(split)
        assert batches == rank_batches(len(split), 3, 1)
        assert sorted(got) == list(range(len(ref))) and got_labels == want_labels
        assert torch.equal(split.labels, ref.labels)
        # Each crop is nearest to the reference crop of its own index (right image, right place) ...
        nearest = [min(want, key=lambda j: (got[i] - want[j]).abs().mean().item()) for i in got]
        assert nearest == list(got)
        # ... and close to it. Measured on these textured photos shrunk 2-8x: mean |difference| 0.02-0.36
        # normalised (2-20 grey levels): re-encoded JPEGs and each library's own downscaling filter.
        diff = torch.stack([(got[i] - want[i]).abs().mean() for i in got])
        assert diff.max() < 0.5, f"{fmt} centre crops differ from PIL's by {diff.max():.3f} on average"


def test_dali_shards_split_over_ranks_cover_every_sample_once(converted_folders):
    train, _, _ = open_splits(converted_folders["dali"])
    seen = {}
    counts = []
    for rank in range(3):
        images, _, batches = _images_by_index(train, world_size=3, rank=rank, batch_size=2)
        counts.append(batches)
        assert not seen.keys() & images.keys()
        seen.update(images)
    assert sorted(seen) == list(range(len(train))) and len(set(counts)) == 1


def test_missing_val_split_and_unknown_val_class_are_named(labelled_folder, tmp_path):
    only_train = tmp_path / "only_train"
    shutil.copytree(labelled_folder / "train", only_train / "train")
    with pytest.raises(UsageError, match="has no val split"):
        open_splits(only_train)
    extra = tmp_path / "extra"
    shutil.copytree(labelled_folder, extra)
    (extra / "val" / "zebra").mkdir()
    shutil.copy(next((extra / "val" / "astronaut").iterdir()), extra / "val" / "zebra" / "z.jpg")
    with pytest.raises(UsageError, match="zebra"):
        open_splits(extra)
