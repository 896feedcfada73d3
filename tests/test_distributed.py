"""Centers across ranks: one all-reduce for all six equals the official six, on 2 gloo processes."""

import copy
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mokd_fast import LOSS_TERMS, MOKD
from tests.conftest import random_crops, small_config
from tests.helpers import free_port, max_rel_err
from tests.official_reference import official_losses, official_step

OFFICIAL_ORDER = ("loss_cnn_fn", "loss_cnn_thead_fn", "loss_cnn_ct_fn", "loss_vit_fn", "loss_vit_thead_fn", "loss_vit_ct_fn")


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initial weights on both ranks
    cfg = small_config(drop_path_rate=0.0)
    fused = MOKD(cfg)
    ref = copy.deepcopy(fused)
    ref_losses = official_losses(cfg, world_size=world)
    loss_err = 0.0
    for step in range(2):
        crops = random_crops(cfg, batch=2, seed=100 * rank + step)  # each rank sees its own images
        terms = fused.loss_terms(crops, 1)
        ref_terms, _, _ = official_step(ref, crops, 1, ref_losses)
        loss_err = max([loss_err] + [max_rel_err(terms[n], ref_terms[n]) for n in LOSS_TERMS])
    centers = fused.criterion.centers
    gathered = [torch.zeros_like(centers) for _ in range(world)]
    dist.all_gather(gathered, centers)
    ref_centers = torch.stack([ref_losses[name].center[0] for name in OFFICIAL_ORDER])
    results[rank] = {
        "loss_err": loss_err,
        "center_err": max_rel_err(centers, ref_centers),
        "ranks_equal": all(torch.equal(g, gathered[0]) for g in gathered),
    }
    dist.destroy_process_group()


def test_fused_centers_match_official_across_two_ranks() -> None:
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world, free_port(), results), nprocs=world, join=True)
        results = dict(results)
    assert sorted(results) == [0, 1]
    for rank, res in results.items():
        assert res["ranks_equal"], f"rank {rank}: centers differ between ranks"
        assert res["center_err"] <= 1e-6, f"rank {rank}: centers vs official {res['center_err']:.3g}"
        assert res["loss_err"] <= 1e-6, f"rank {rank}: losses vs official {res['loss_err']:.3g}"
