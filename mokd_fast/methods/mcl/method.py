"""MCL-MoCo as an engine method: N query encoders (one DDP module), their EMA key encoders and queues."""

import copy
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from mokd_fast.core.errors import UsageError
from mokd_fast.core.regions import region
from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.checkpoint import check_archs, cpu_state, without
from mokd_fast.methods.common.ema import TeacherEMA
from mokd_fast.methods.common.monitors import embedding_spread
from mokd_fast.methods.common.queue import EmbeddingQueue, gather_rows
from mokd_fast.methods.common.sgd import sgd_over, step_or_cosine_lr
from mokd_fast.methods.mcl.config import MCLConfig, MCLTrainConfig
from mokd_fast.methods.mcl.losses import mcl_moco_losses
from mokd_fast.methods.mcl.shuffle import (
    shuffled_slice,
    step_permutation,
    unshuffled_slice,
)
from mokd_fast.methods.mcl.views import mcl_policy
from mokd_fast.models.features import build_feature_backbone
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy


class Encoder(nn.Module):
    """A peer's query encoder: backbone + fc (``Linear(d, dim)``, official) or MoCo v2's MLP (``head_bn``: with
    BatchNorm after its hidden layer); ``[N, 3, H, W] -> [N, dim]``.

    Keys ``backbone.*`` (what the evaluation and export tools read) and ``head.*``.
    """

    def __init__(self, arch: str, dim: int, mlp: bool, head_bn: bool = False) -> None:
        super().__init__()
        built = build_feature_backbone(arch)
        self.backbone, self.kind, self._features = built.module, built.kind, built.features
        d = built.width
        hidden = [nn.Linear(d, d), *([nn.BatchNorm1d(d)] if head_bn else []), nn.ReLU(inplace=True)]
        self.head = nn.Sequential(*hidden, nn.Linear(d, dim)) if mlp else nn.Linear(d, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(self.backbone, x))


def grouped_forward(module: nn.Module, x: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Per peer ``[B, dim]``: ``module`` on each of ``groups`` equal slices of ``x`` ``[B, 3, H, W]`` (so BatchNorm
    normalises each slice by its own statistics, as ``groups`` ranks would), concatenated in order."""
    if groups == 1:
        return module(x)
    outs = [module(part) for part in x.chunk(groups)]
    return [torch.cat(parts) for parts in zip(*outs)]


class Peers(nn.Module):
    """Every query encoder, the one module DDP wraps; ``forward`` embeds one view with each."""

    def __init__(self, encoders: list[Encoder]) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``[B, 3, H, W]`` -> per peer ``[B, dim]`` normalised queries."""
        return [F.normalize(enc(x), dim=1) for enc in self.encoders]


class MCL(Method):
    """MCL-MoCo (AAAI 2022): MoCo per peer plus contrast and distribution matching across peers.

    View 0 goes to every query encoder, view 1 to every key encoder (no symmetrisation, as
    official). The key encoders follow their query encoders by a constant-momentum EMA after each
    optimiser step, which gives every forward the same keys as the official update at the start of
    the next forward; each peer's keys of all ranks are enqueued after the step.

    Args:
        cfg: Peers, keys, queues and loss; see ``MCLConfig``.
        train: The training recipe; the official defaults when omitted.
    """

    name = "mcl"
    configs = (MCLConfig, MCLTrainConfig)
    # before 2026-12-05: no head BN, SGD only, no warm-up
    added_settings: ClassVar[dict[str, Any]] = {"head_bn": False, "optimizer": "sgd", "warmup_epochs": 0,
                                                "bn_splits": 1, "negatives": "queue"}

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """Two peers (``arch_1``, ``arch_2``) on ``global_size`` views."""
        return {"archs": (bench["arch_1"], bench["arch_2"]), "global_size": bench["global_size"]}

    def __init__(self, cfg: MCLConfig, train: MCLTrainConfig | None = None) -> None:
        train = train if train is not None else MCLTrainConfig()
        if train.batch_size_per_gpu % cfg.bn_splits:
            raise UsageError(f"--bn_splits {cfg.bn_splits} must divide --batch_size_per_gpu {train.batch_size_per_gpu}")
        super().__init__(cfg, train)
        self.peers = Peers([Encoder(arch, cfg.dim, cfg.mlp, cfg.head_bn) for arch in cfg.archs])
        self.keys = copy.deepcopy(self.peers)
        self.keys.requires_grad_(False)
        self.queues = nn.ModuleList(EmbeddingQueue(cfg.queue_size, cfg.dim, seed=train.seed + i)
                                    for i in range(len(cfg.archs)))
        self.ema = TeacherEMA(self.peers, self.keys, fused=cfg.fused_ema)
        self._pending: list[torch.Tensor] | None = None  # this step's keys, per peer [B, dim]

    @classmethod
    def make_policy(cls, cfg: MCLConfig, train: MCLTrainConfig) -> MultiCropPolicy:
        return mcl_policy(cfg.global_size, cfg.crop_scale, cfg.aug_plus)

    def trainable(self) -> nn.Module:
        return self.peers

    def distribute(self, device: torch.device, sync_bn: bool = True, static_graph: bool = True,
                   bucket_view: bool = True) -> None:
        """DDP over the query encoders; with ``--key_bn sync`` on CUDA, SyncBatchNorm in the key encoders too.

        Raises:
            UsageError: ``--bn_splits`` above 1 (its emulation is for one process; ranks shuffle with --key_bn).
        """
        if self.cfg.bn_splits > 1:
            raise UsageError(f"--bn_splits {self.cfg.bn_splits} emulates shuffle BN on one process; under DDP leave it "
                             "at 1 and use --key_bn shuffle")
        super().distribute(device, sync_bn, static_graph, bucket_view)
        if self.cfg.key_bn == "sync" and device.type == "cuda":
            self.keys = nn.SyncBatchNorm.convert_sync_batchnorm(self.keys)
            self.ema = TeacherEMA(self.peers, self.keys, fused=self.cfg.fused_ema)

    def compile_regions(self) -> None:
        """Each query and key encoder (one static-shape graph each)."""
        for encoders in (self.peers.encoders, self.keys.encoders):
            for enc in encoders:
                enc.compile(dynamic=False)

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """One SGD over every peer (official: ``model.parameters()``, decay on every parameter)."""
        return sgd_over("peers", self.peers, self.train_cfg, fused)

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        """Per epoch: x0.1 at each ``--schedule`` epoch (official), or a cosine with ``--cos``."""
        return step_or_cosine_lr(self.train_cfg, self.epochs, iters_per_epoch, world_size)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor, step: int) -> list[torch.Tensor]:
        """Per peer ``[B, dim]`` normalised keys of ``x`` (view 1), shuffle-BN across ranks when asked."""
        shuffle = self.cfg.key_bn == "shuffle" and dist.is_available() and dist.is_initialized() \
            and dist.get_world_size() > 1
        groups = self.cfg.bn_splits
        if not shuffle and groups > 1:  # one process emulating shuffle BN over `groups` ranks
            perm = step_permutation(x.shape[0], self.train_cfg.seed, step, x.device)
            inverse = torch.argsort(perm)
            return [k[inverse] for k in grouped_forward(self.keys, x[perm], groups)]
        if not shuffle:
            return self.keys(x)
        perm = step_permutation(x.shape[0] * dist.get_world_size(), self.train_cfg.seed, step, x.device)
        keys = self.keys(shuffled_slice(x, perm))  # each rank encodes one slice of the permuted global batch
        back = unshuffled_slice(torch.cat(keys, dim=1), perm)  # [B, N * dim]: one all-gather for every peer
        return list(back.split(self.cfg.dim, dim=1))

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        self.check_batch(batch)
        view_q, view_k = batch.global_crops.chunk(2)  # [B, 3, H, W] each
        cfg = self.cfg
        with region("queries"):
            q = grouped_forward(self.run_trainable(), view_q, cfg.bn_splits)
        with region("keys"):
            k = self._keys(view_k, info.step)
        with region("losses"):
            if cfg.negatives == "batch":  # every rank's keys [W * B, dim] per peer; this rank's start at rank * B
                keys = gather_rows(torch.cat(k, dim=1)).split(cfg.dim, dim=1)
                rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
                terms = mcl_moco_losses(q, list(keys), None, cfg.temperature, cfg.kd_temperature,
                                        first_key=rank * view_q.shape[0])
            else:
                terms = mcl_moco_losses(q, k, [queue.queue for queue in self.queues], cfg.temperature,
                                        cfg.kd_temperature)
            total = (cfg.weight_vcl * terms["vcl"] + cfg.weight_svcl * terms["svcl"] + cfg.weight_icl * terms["icl"]
                     + cfg.weight_sicl * terms["sicl"])
        with torch.no_grad():  # collapse monitors: the spread of each peer's queries
            terms |= {f"peer_{i}_spread": embedding_spread(qi) for i, qi in enumerate(q, start=1)}
        self._pending = k if cfg.negatives == "queue" else None
        return Losses(terms, {"peers": total})

    @torch.no_grad()
    def after_step(self, info: StepInfo) -> None:
        """Key encoders' EMA, then every rank's keys into each peer's queue (one all-gather; none with in-batch
        negatives)."""
        self.ema.update(self.cfg.key_momentum)
        if self._pending is None:
            return
        rows = gather_rows(torch.cat(self._pending, dim=1))  # [W * B, N * dim], rank order
        self._pending = None
        for queue, keys in zip(self.queues, rows.split(self.cfg.dim, dim=1)):
            queue.enqueue(keys, gathered=True)

    def collapse_advice(self) -> dict[str, str]:
        """The base advice plus the head that kept MCL-MoCo's queries apart on the shapes (docs/learning-health.md)."""
        return {"spread": super().collapse_advice()["spread"] + " With --mlp, --head_bn true (BatchNorm in the "
                          "head) kept the spread at 0.27-0.35 where it fell to 0.007 without."}

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        return {f"peer_{i}": (enc.backbone, enc.kind) for i, enc in enumerate(self.peers.encoders, start=1)}

    def describe(self) -> str:
        parts = [f"{arch} ({sum(p.numel() for p in enc.parameters()) / 1e6:.1f}M)"
                 for arch, enc in zip(self.cfg.archs, self.peers.encoders)]
        bn = f"shuffle BN emulated over {self.cfg.bn_splits} groups" if self.cfg.bn_splits > 1 else f"{self.cfg.key_bn} BN"
        negatives = (f"queues {len(parts)} x {self.cfg.queue_size} x {self.cfg.dim}" if self.cfg.negatives == "queue"
                     else "in-batch negatives")
        return f"MCL-MoCo {' + '.join(parts)}, EMA keys (m {self.cfg.key_momentum}, {bn}), {negatives}"

    def checkpoint_state(self) -> dict[str, Any]:
        """Per peer ``peer_i`` (query encoder: what the evaluation tools read), ``arch_i``, ``key_i``; the queues."""
        out: dict[str, Any] = {}
        for i, (arch, enc, key) in enumerate(zip(self.cfg.archs, self.peers.encoders, self.keys.encoders), start=1):
            out |= {f"peer_{i}": cpu_state(enc), f"arch_{i}": arch, f"key_{i}": cpu_state(key)}
        out["mcl_queues"] = {f"queue_{i}": cpu_state(q) for i, q in enumerate(self.queues, start=1)}
        return out

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        n = len(self.cfg.archs)
        names = [f"{kind}_{i}" for i in range(1, n + 1) for kind in ("peer", "arch", "key")]
        if any(f"peer_{i}" not in ckpt or f"key_{i}" not in ckpt for i in range(1, n + 1)) or "mcl_queues" not in ckpt:
            raise ValueError(f"no peer_i/key_i/mcl_queues entries for {n} peers: not an MCL checkpoint of this run "
                             f"(keys: {sorted(ckpt)[:8]})")
        check_archs(ckpt, self.cfg.archs, "peer", "--archs")
        try:
            for i, (enc, key, queue) in enumerate(zip(self.peers.encoders, self.keys.encoders, self.queues), start=1):
                enc.load_state_dict(ckpt[f"peer_{i}"])
                key.load_state_dict(ckpt[f"key_{i}"])
                queue.load_state_dict(ckpt["mcl_queues"][f"queue_{i}"])
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"the MCL checkpoint does not fit these peers or queues: {err}") from err
        return without(ckpt, (*names, "mcl_queues"))
