"""L-MCL as an engine method: N classifiers with auxiliary stages, projection heads, an aggregator, memory banks."""

from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from mokd_fast.core.precision import at_least_fp32
from mokd_fast.core.regions import region
from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.checkpoint import check_archs, cpu_state, without
from mokd_fast.methods.common.monitors import embedding_spread
from mokd_fast.methods.common.sgd import sgd_over, step_or_cosine_lr
from mokd_fast.methods.lmcl.config import LMCLConfig, LMCLTrainConfig
from mokd_fast.methods.lmcl.losses import (
    lmcl_batch_losses,
    lmcl_classification_losses,
    lmcl_memory_losses,
    lmcl_memory_losses_per_pair,
)
from mokd_fast.methods.lmcl.memory import ClassSampler, MemoryBanks
from mokd_fast.methods.lmcl.meta import MetaStep
from mokd_fast.methods.lmcl.networks import (
    Aggregator,
    AuxResNet,
    Embed,
    LossWeightNetwork,
)
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy, ViewPolicy


class Learners(nn.Module):
    """Everything the optimiser trains (the one module DDP wraps): networks, projection heads, aggregator.

    The official code leaves the heads and the aggregator outside DDP, so their copies drift apart
    across ranks; here one DDP reduces all of them (a deliberate difference, recorded in the docs).
    """

    def __init__(self, archs: tuple[str, ...], num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.nets = nn.ModuleList(AuxResNet(arch, num_classes) for arch in archs)
        self.embeds = nn.ModuleList(nn.ModuleList(Embed(net.width, feat_dim) for _ in range(4)) for net in self.nets)
        self.aggregator = Aggregator([net.width for net in self.nets], stages=4)
        # Compiled forwards of the networks (``compile()``), kept out of the module tree: the meta step
        # differentiates twice through the plain modules, which compiled graphs do not support.
        self.__dict__["fast"] = None

    def compile_networks(self) -> None:
        self.__dict__["fast"] = [torch.compile(net, dynamic=False) for net in self.nets]

    def forward(self, x: torch.Tensor) -> tuple[list, list, list, list]:
        """``x`` ``[B, 3, H, W]`` -> per network: stage features, stage logits, projected embeddings, aggregated logits."""
        feats, logits = zip(*(net(x) for net in (self.fast or self.nets)))
        embedded = [[head(f) for head, f in zip(heads, fs)] for heads, fs in zip(self.embeds, feats)]
        return list(feats), list(logits), embedded, self.aggregator(list(feats), list(logits))


class LMCL(Method):
    """L-MCL (TPAMI 2023), ImageNet form: supervised peers with layer-wise mutual contrast against memory banks.

    Needs the training set's labels in dataset-index order (``labels``, given by the engine from the
    pipeline) to size the banks and draw class-aware negatives, and each batch's labels and indices.

    Args:
        cfg: Networks and losses; see ``LMCLConfig``.
        train: The training recipe; the official defaults when omitted.
        labels: ``[N]`` class of every training image.

    Raises:
        ValueError: No labels, or ``--num_classes`` smaller than the labels need.
    """

    name = "lmcl"
    configs = (LMCLConfig, LMCLTrainConfig)
    needs_labels = True
    # the positive law before 2026-12-04; SGD only and no warm-up before 2026-12-05
    added_settings: ClassVar[dict[str, Any]] = {"positive_draw": "others", "optimizer": "sgd", "warmup_epochs": 0}

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """Two networks (``arch_1``, ``arch_2``) on ``global_size`` images, ``classes`` wide."""
        return {"archs": (bench["arch_1"], bench["arch_2"]), "image_size": bench["global_size"],
                "num_classes": bench["classes"]}

    def __init__(self, cfg: LMCLConfig, train: LMCLTrainConfig | None = None,
                 labels: torch.Tensor | None = None) -> None:
        train = train if train is not None else LMCLTrainConfig()
        super().__init__(cfg, train)
        if labels is None:
            raise ValueError("L-MCL needs the training set's labels (its memory banks and class-aware sampling span "
                             "the whole set); train.py reads them from the data")
        labels = torch.as_tensor(labels, dtype=torch.long)
        classes = int(labels.max()) + 1
        if cfg.num_classes is not None and cfg.num_classes < classes:
            raise ValueError(f"--num_classes {cfg.num_classes} but the training labels go up to {classes - 1}")
        self.num_classes = cfg.num_classes or classes
        self.learners = Learners(cfg.archs, self.num_classes, cfg.feat_dim)
        bank = cfg.memory == "bank"
        self.banks = (MemoryBanks(len(cfg.archs), len(labels), cfg.feat_dim, seed=train.seed, momentum=cfg.nce_momentum)
                      if bank else None)
        self.sampler = ClassSampler(labels) if bank else None
        self.weight_net = LossWeightNetwork([[net.width] * 4 for net in self.learners.nets])
        self.weight_net.requires_grad_(cfg.meta == "on")
        self._weight_opt: torch.optim.Optimizer | None = None  # built on the training device, on first use
        self._weight_opt_state: dict | None = None
        self._iters_per_epoch = 1
        self._pending: tuple[list[torch.Tensor], torch.Tensor] | None = None
        self._meta_batch: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def make_policy(cls, cfg: LMCLConfig, train: LMCLTrainConfig) -> MultiCropPolicy:
        """One bilinear random resized crop with a flip, no colour augmentation (official ImageNet transform)."""
        view = ViewPolicy(cfg.image_size, tuple(cfg.crop_scale), interpolation="bilinear", flip_p=0.5, jitter_p=0.0,
                          grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
        return MultiCropPolicy((view,), view, local_crops_number=0)

    def trainable(self) -> nn.Module:
        return self.learners

    def compile_regions(self) -> None:
        """The networks' forwards in the step; the meta step runs the plain modules."""
        self.learners.compile_networks()

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """One SGD with Nesterov over networks, heads and aggregator, decay on every parameter (official)."""
        return sgd_over("learners", self.learners, self.train_cfg, fused, nesterov=True)

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        """Per epoch: x0.1 at each ``--schedule`` epoch (official), or a cosine with ``--cos``."""
        self._iters_per_epoch = iters_per_epoch
        return step_or_cosine_lr(self.train_cfg, self.epochs, iters_per_epoch, world_size)

    def pair_weights(self, feats: list[list[torch.Tensor]]) -> torch.Tensor:
        """``[P, B]`` per-sample weights of the ``N (N - 1) S^2`` pairs: the weight network's (no gradient), or 1."""
        if self.cfg.meta == "on":
            with torch.no_grad(), torch.autocast(feats[0][0].device.type, enabled=False):
                return self.weight_net([[at_least_fp32(f) for f in fs] for fs in feats])
        n, stages, batch = len(feats), len(feats[0]), feats[0][0].shape[0]
        return feats[0][0].new_ones(n * (n - 1) * stages * stages, batch, dtype=torch.float32)

    def _contrast(self, embedded: list[list[torch.Tensor]], weights: torch.Tensor, labels: torch.Tensor,
                  idx: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """vcl, svcl, icl, sicl against the memory banks (``idx`` their rows) or within the batch."""
        cfg = self.cfg
        if self.banks is None:
            return lmcl_batch_losses(embedded, labels, weights, cfg.tau, cfg.kd_temperature)
        if not cfg.fused_loss:
            banks = [self.banks.bank(i) for i in range(self.banks.networks)]
            return lmcl_memory_losses_per_pair(embedded, banks, idx, weights, cfg.tau, cfg.kd_temperature, cfg.pos_k,
                                               cfg.official_vcl)
        return lmcl_memory_losses(embedded, self.banks.rows(idx), weights, cfg.tau, cfg.kd_temperature, cfg.pos_k,
                                  cfg.official_vcl)

    def _mcl_loss(self, x: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor | None,
                  own: torch.Tensor) -> torch.Tensor:
        """The official inner objective: the weighted contrastive terms of the plain networks with the weight
        network's pair weights (with gradient), then the memory update, as the official criterion does."""
        cfg = self.cfg
        feats = [net(x)[0] for net in self.learners.nets]
        embedded = [[head(f) for head, f in zip(heads, fs)] for heads, fs in zip(self.learners.embeds, feats)]
        terms = self._contrast(embedded, self.weight_net(feats), labels, idx)
        if self.banks is not None:
            self.banks.update([e[-1].detach() for e in embedded], own)
        return cfg.alpha * terms["vcl"] + cfg.gamma * terms["svcl"] + cfg.beta * terms["icl"] + cfg.lam * terms["sicl"]

    def _cls_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The official outer objective: every stage's cross-entropy (no aggregator, no KD)."""
        return sum(nn.functional.cross_entropy(logit, labels) for net in self.learners.nets for logit in net(x)[1])

    def weight_optimizer(self) -> torch.optim.Optimizer:
        """The weight network's Nesterov SGD (official ``weight_optimizer``), on the weights' device."""
        if self._weight_opt is None:
            t = self.train_cfg
            self._weight_opt = torch.optim.SGD(self.weight_net.parameters(), lr=0.0, momentum=t.momentum,
                                               weight_decay=t.weight_decay, nesterov=t.momentum > 0)
            if self._weight_opt_state is not None:
                self._weight_opt.load_state_dict(self._weight_opt_state)
                self._weight_opt_state = None
        return self._weight_opt

    def meta_step(self, lr: float) -> None:
        """The official meta step on the stored batch; the weight network then takes one step."""
        x, labels, idx, own = self._meta_batch
        t = self.train_cfg
        stateful = [self.learners.nets, self.learners.embeds] + ([self.banks] if self.banks is not None else [])
        stepper = MetaStep(list(self.learners.nets.parameters()) + list(self.learners.embeds.parameters()), stateful,
                           list(self.weight_net.parameters()), self.cfg.meta_times, t.momentum, t.weight_decay)
        with torch.autocast(x.device.type, enabled=False):
            stepper.run(lambda: self._mcl_loss(x, labels, idx, own), lambda: self._cls_loss(x, labels), lr)
        opt = self.weight_optimizer()
        for group in opt.param_groups:
            group["lr"] = float(lr)  # a Python float: checkpoints hold plain data
        opt.step()
        opt.zero_grad(set_to_none=True)

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        self.check_batch(batch)
        if batch.labels is None or (batch.indices is None and self.banks is not None):
            raise ValueError("L-MCL needs each batch's labels and dataset indices; the dali pipeline gives no indices "
                             "(use --pipeline nvjpeg on the same shards, ffcv or torchvision)")
        with region("networks"):
            feats, logits, embedded, aggregated = self.run_trainable()(batch.global_crops)
        cfg = self.cfg
        with region("losses"):
            idx = None
            if self.sampler is not None:
                rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
                    else (0, 1)
                idx = self.sampler.sample(batch.indices, cfg.pos_k, cfg.neg_k, self.train_cfg.seed, info.step, rank,
                                          world, cfg.positive_draw)  # [B, 1 + pos_k + neg_k]
            weights = self.pair_weights([[f.detach() for f in fs] for fs in feats])
            terms = lmcl_classification_losses(logits, aggregated, batch.labels, cfg.kd_temperature)
            terms |= self._contrast(embedded, weights, batch.labels, idx)
            total = (terms["cls"] + terms["kd"] + cfg.alpha * terms["vcl"] + cfg.gamma * terms["svcl"]
                     + cfg.beta * terms["icl"] + cfg.lam * terms["sicl"])
        with torch.no_grad():  # collapse monitors: the spread of each network's last-stage projection
            terms |= {f"net_{i}_spread": embedding_spread(e[-1]) for i, e in enumerate(embedded, start=1)}
        if self.banks is not None:
            self._pending = ([e[-1].detach() for e in embedded], batch.indices)
        if cfg.meta == "on" and (info.step % self._iters_per_epoch) % cfg.meta_freq == 0:
            self._meta_batch = (at_least_fp32(batch.global_crops), batch.labels, idx, batch.indices)
        return Losses(terms, {"learners": total})

    def after_step(self, info: StepInfo) -> None:
        """The memory banks move towards this step's last-stage embeddings of every rank's images; then, every
        ``--meta_freq`` batches of an epoch, the meta step on this batch (official order)."""
        if self._pending is not None:
            with torch.no_grad():
                self.banks.update(*self._pending)
            self._pending = None
        if self._meta_batch is not None:
            with region("meta"):
                self.meta_step(info.values["lr"])
            self._meta_batch = None

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        return {f"net_{i}": (net.backbone, "cnn") for i, net in enumerate(self.learners.nets, start=1)}

    def describe(self) -> str:
        parts = [f"{arch} + 3 auxiliary classifiers ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}M)"
                 for arch, net in zip(self.cfg.archs, self.learners.nets)]
        memory = (f"memory banks {len(parts)} x {self.banks.bank(0).shape[0]} x {self.cfg.feat_dim}, {self.cfg.neg_k} "
                  "negatives" if self.banks is not None else "in-batch contrast")
        return f"L-MCL {' + '.join(parts)}, {self.num_classes} classes; {memory}; meta {self.cfg.meta}"

    def checkpoint_state(self) -> dict[str, Any]:
        """Per network ``net_i`` (ResNet ``backbone.*``: what the evaluation tools read; ``auxiliary.*``) and
        ``arch_i``; the heads and aggregator (``lmcl_heads``) and the memory banks (``lmcl_banks``)."""
        out: dict[str, Any] = {}
        for i, (arch, net) in enumerate(zip(self.cfg.archs, self.learners.nets), start=1):
            out |= {f"net_{i}": cpu_state(net), f"arch_{i}": arch}
        out["lmcl_heads"] = {"embeds": cpu_state(self.learners.embeds), "aggregator": cpu_state(self.learners.aggregator)}
        if self.banks is not None:
            out["lmcl_banks"] = cpu_state(self.banks)
        opt = self._weight_opt.state_dict() if self._weight_opt is not None else self._weight_opt_state
        out["lmcl_weight_net"] = {"state": cpu_state(self.weight_net), "optimizer": opt}
        return out

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        n = len(self.cfg.archs)
        if any(f"net_{i}" not in ckpt for i in range(1, n + 1)) or "lmcl_heads" not in ckpt or \
                (self.banks is not None) != ("lmcl_banks" in ckpt):
            raise ValueError(f"no net_i/lmcl_heads/lmcl_banks entries for {n} networks: not an L-MCL checkpoint of this "
                             f"run (keys: {sorted(ckpt)[:8]})")
        check_archs(ckpt, self.cfg.archs, "network", "--archs")
        try:
            for i, net in enumerate(self.learners.nets, start=1):
                net.load_state_dict(ckpt[f"net_{i}"])
            self.learners.embeds.load_state_dict(ckpt["lmcl_heads"]["embeds"])
            self.learners.aggregator.load_state_dict(ckpt["lmcl_heads"]["aggregator"])
            if self.banks is not None:
                self.banks.load_state_dict(ckpt["lmcl_banks"])
            if "lmcl_weight_net" in ckpt:
                self.weight_net.load_state_dict(ckpt["lmcl_weight_net"]["state"])
                self._weight_opt, self._weight_opt_state = None, ckpt["lmcl_weight_net"]["optimizer"]
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"the L-MCL checkpoint does not fit these networks or banks (same data and "
                             f"--num_classes?): {err}") from err
        names = [f"{kind}_{i}" for i in range(1, n + 1) for kind in ("net", "arch")]
        return without(ckpt, (*names, "lmcl_heads", "lmcl_banks", "lmcl_weight_net"))
