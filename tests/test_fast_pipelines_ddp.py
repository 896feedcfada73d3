"""Two gloo processes on CPU: each rank reads a disjoint part of every epoch, with equal batch counts."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from mokd_fast.convert.cli import main as convert_main
from pipelines import PIPELINES
from pipelines.policy import MultiCropPolicy
from tests.helpers import free_port

N_IMAGES = 26  # not a multiple of 2 ranks x 4: the tail must be dropped evenly
POLICY = MultiCropPolicy.mokd(32, 16, (0.25, 1.0), (0.05, 0.25), 2)


@pytest.fixture(scope="module")
def one_class_per_image(photo_folder, tmp_path_factory):
    """Every image its own class, so a label names the image."""
    root = tmp_path_factory.mktemp("unique")
    photos = sorted(photo_folder.rglob("*.jpg"))
    for i in range(N_IMAGES):
        (root / "folder" / f"class{i:03d}").mkdir(parents=True)
        Image.open(photos[i % len(photos)]).save(root / "folder" / f"class{i:03d}" / "a.jpg")
    assert convert_main([str(root / "folder"), str(root / "dali"), "--format", "dali", "--shard-size", "5"]) == 0
    assert convert_main([str(root / "folder"), str(root / "ffcv"), "--format", "ffcv"]) == 0
    return {"dali": root / "dali", "nvjpeg": root / "dali", "ffcv": root / "ffcv" / "train.beton"}


def _worker(rank: int, port: int, backend: str, data, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    pipe = PIPELINES[backend](data, POLICY, 4, 2, rank, 0, 1, torch.device("cpu"))
    results[rank] = {e: [b.labels.tolist() for b in pipe.epoch(e)] for e in range(2)}
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["dali", "ffcv", "nvjpeg"])
def test_ranks_read_disjoint_equal_parts(backend, one_class_per_image):
    port = free_port()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, backend, one_class_per_image[backend], results), nprocs=2)
    for epoch in range(2):
        a, b = results[0][epoch], results[1][epoch]
        assert len(a) == len(b) == 3  # 26 images // 2 ranks // 4 per batch
        seen_a, seen_b = [x for batch in a for x in batch], [x for batch in b for x in batch]
        assert not set(seen_a) & set(seen_b), "ranks share images within an epoch"
        assert len(set(seen_a)) == len(seen_a) == 12
    assert results[0][0] != results[0][1]  # a new order each epoch
