"""DoGo as an engine method: two peers, each on its own two views, one Adam each, no teacher."""

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mokd_fast.core.regions import region
from mokd_fast.methods.base import Losses, Method, OptimizerSpec, StepInfo
from mokd_fast.methods.common.checkpoint import cpu_state, without
from mokd_fast.methods.common.monitors import embedding_spread
from mokd_fast.methods.common.optim import make_optimizer
from mokd_fast.methods.common.schedules import cosine_schedule
from mokd_fast.methods.dogo.config import DoGoConfig, DoGoTrainConfig
from mokd_fast.methods.dogo.models import Encoder, Peer
from mokd_fast.methods.dogo.objective import dogo_objective
from mokd_fast.methods.dogo.views import dogo_policy
from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy

PEER_NAMES = ("peer_1", "peer_2")  # optimiser names: checkpoint entries optimizer_peer_1/2, log loss_peer_1/2
VIEWS_PER_PEER = 2


class PeerPair(nn.Module):
    """Both peers as the one module DDP wraps; ``forward`` runs each peer on each of its views.

    Each view is its own forward pass, so BatchNorm normalises every view with its own statistics,
    as the official loop does.
    """

    def __init__(self, peers: list[Peer]) -> None:
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, views: list[torch.Tensor]) -> tuple[tuple[dict, dict], ...]:
        """``views``: four ``[B, 3, H, W]`` tensors (peer 1's two, then peer 2's) -> per peer, its outputs per view."""
        return tuple(tuple(peer(v) for v in views[i * VIEWS_PER_PEER:(i + 1) * VIEWS_PER_PEER])
                     for i, peer in enumerate(self.peers))


class DoGo(Method):
    """Distill on the Go (CVPRW 2021): each peer self-supervised, plus a KL between their similarity matrices.

    Args:
        cfg: The peers and their losses; see ``DoGoConfig``.
        train: The training recipe; the official defaults when omitted.
    """

    name = "dogo"
    configs = (DoGoConfig, DoGoTrainConfig)

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """Peer 1 (SimCLR head) ``arch_1`` and peer 2 (SimSiam head) ``arch_2`` on ``global_size`` views."""
        return {"arch_1": bench["arch_1"], "arch_2": bench["arch_2"], "image_size": bench["global_size"]}

    def __init__(self, cfg: DoGoConfig, train: DoGoTrainConfig | None = None) -> None:
        super().__init__(cfg, train if train is not None else DoGoTrainConfig())
        self.kinds = (cfg.head_1, cfg.head_2)
        self.pair = PeerPair([Peer(cfg.arch_1, cfg.head_1, cfg.n_proj_1, cfg.image_size, cfg.keep_fc, cfg.cifar_stem),
                              Peer(cfg.arch_2, cfg.head_2, cfg.n_proj_2, cfg.image_size, cfg.keep_fc, cfg.cifar_stem)])

    @classmethod
    def make_policy(cls, cfg: DoGoConfig, train: DoGoTrainConfig) -> MultiCropPolicy:
        """Four global views (two per peer, each with its own head's official transform), no local view."""
        return dogo_policy(cfg.image_size, (cfg.head_1, cfg.head_2), cfg.norm_mean, cfg.norm_std)

    def trainable(self) -> nn.Module:
        return self.pair

    def compile_regions(self) -> None:
        """Compiles each peer (encoder and head); its four view passes share one static-shape graph."""
        for peer in self.pair.peers:
            peer.compile(dynamic=False)

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """One Adam per peer over all its parameters, constant weight decay (official: coupled L2 1e-6)."""
        t = self.train_cfg
        specs = {}
        for name, peer in zip(PEER_NAMES, self.pair.peers):
            opt = make_optimizer(t.optimizer, [{"params": list(peer.parameters()), "weight_decay": t.weight_decay}],
                                 fused)
            specs[name] = OptimizerSpec(opt, [("lr", None)], dict(peer.named_parameters()), t.clip_grad)
        return specs

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        """The peers' learning rate: constant (official), or warm-up and cosine when asked for."""
        t = self.train_cfg
        return {"lr": cosine_schedule(t.lr, t.final_lr, self.epochs, iters_per_epoch, t.warmup_epochs)}

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        self.check_batch(batch)
        n = self.policy.n_global
        views = list(batch.global_crops.chunk(n))  # view-major: [B, 3, H, W] each
        outputs = self.run_trainable()(views)
        cfg = self.cfg
        with region("losses"):
            terms, totals = dogo_objective(self.kinds, outputs, (cfg.kl_weight_1, cfg.kl_weight_2), cfg.kl_temperature,
                                           cfg.global_batch, cfg.ntxent_temperature)
        with torch.no_grad():  # collapse monitor: the spread of each peer's projections of its first view
            terms |= {f"{name}_spread": embedding_spread(peer[0]["z"]) for name, peer in zip(PEER_NAMES, outputs)}
        return Losses(terms, totals)

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        """Each peer's encoder (its ``f``, which the official linear evaluation reads)."""
        out = {}
        for name, peer in zip(PEER_NAMES, self.pair.peers):
            net = peer.encoder.net if isinstance(peer.encoder, Encoder) else peer.encoder
            out[name] = (net, "vit" if hasattr(net, "patch_embed") else "cnn")
        return out

    def describe(self) -> str:
        parts = [f"{arch}/{kind} ({sum(p.numel() for p in peer.parameters()) / 1e6:.1f}M)"
                 for arch, kind, peer in zip((self.cfg.arch_1, self.cfg.arch_2), self.kinds, self.pair.peers)]
        return "DoGo " + " + ".join(parts)

    def checkpoint_state(self) -> dict[str, Any]:
        """``peer_1``/``peer_2`` (each peer's encoder and head) and ``arch_1``/``arch_2``.

        One entry per peer, like MOKD's per-model entries, so the evaluation and export tools read a
        peer's encoder with ``--checkpoint_key peer_1`` and its architecture from ``arch_1``.
        """
        out: dict[str, Any] = {}
        for i, (name, peer) in enumerate(zip(PEER_NAMES, self.pair.peers), start=1):
            out[name] = cpu_state(peer)
            out[f"arch_{i}"] = getattr(self.cfg, f"arch_{i}")
        return out

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        for i, (name, peer) in enumerate(zip(PEER_NAMES, self.pair.peers), start=1):
            if name not in ckpt:
                raise ValueError(f"no {name!r} entry: not a DoGo checkpoint (keys: {sorted(ckpt)[:8]})")
            saved, ours = ckpt.get(f"arch_{i}"), getattr(self.cfg, f"arch_{i}")
            if saved is not None and saved != ours:
                raise ValueError(f"{name} was trained as {saved!r} but --arch_{i} is {ours!r}")
            try:
                peer.load_state_dict(ckpt[name])
            except RuntimeError as err:
                raise ValueError(f"the {name} weights do not fit this peer: {err}") from err
        return without(ckpt, (*PEER_NAMES, "arch_1", "arch_2"))
