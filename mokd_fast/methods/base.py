"""The contract between a training method and the engine.

A method says what to compute; the engine (``engine.step.TrainStep`` and ``engine.trainer.Trainer``) says how:
autocast, backward, grad scalers, clipping, last-layer freezing, optimiser steps, schedules, DDP,
compile, channels-last, logging, checkpoints and resume are the engine's, the same for every method.

A method is one ``nn.Module`` subclass of ``Method`` (one level of inheritance) and declares:
- its settings: ``configs``, two dataclasses of ``core.settings.setting`` fields (the method's own, and
  its training recipe, a subclass of ``core.run_config.RunConfig``), from which ``train.py`` makes flags;
- its views: ``make_policy()``, a ``MultiCropPolicy`` the pipelines cut every image into;
- its optimisers: ``optimizers()``, named ``OptimizerSpec`` s whose parameter groups are tagged with
  the per-step arrays (``schedules()``) that set their learning rate and weight decay;
- its losses: ``losses()``, named fp32 terms to log and one total per optimiser name;
- what follows the optimiser steps: ``after_step()`` (EMA, queues);
- the module DDP wraps (``trainable()``), its eval backbones and its checkpoint entries.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from pipelines.batch import MultiCropBatch
from pipelines.policy import MultiCropPolicy


@dataclass(frozen=True)
class StepInfo:
    """Where the run is when a step starts.

    Attributes:
        step: Global step, from 0.
        epoch: Epoch of this step.
        values: This step's entry of every array of ``Method.schedules()``.
    """

    step: int
    epoch: int
    values: dict[str, float]


@dataclass
class OptimizerSpec:
    """One optimiser of a method, with what the engine needs to drive it.

    Attributes:
        optimizer: The torch optimiser; its groups' ``lr``/``weight_decay`` are set each step.
        schedules: Per parameter group (same order): the name of the array in ``Method.schedules()``
            giving its learning rate, and the one giving its weight decay (None: left as built, e.g.
            0 for biases or a constant decay).
        params: The optimiser's parameters by name, for clipping and last-layer freezing.
        clip: Per-parameter gradient-norm clip; 0 disables.
        freeze_last_layer: Epochs during which parameters named ``*last_layer*`` get no update.
    """

    optimizer: torch.optim.Optimizer
    schedules: list[tuple[str, str | None]]
    params: dict[str, nn.Parameter]
    clip: float = 0.0
    freeze_last_layer: int = 0

    def __post_init__(self) -> None:
        if len(self.schedules) != len(self.optimizer.param_groups):
            raise ValueError(f"{len(self.schedules)} schedule tags for {len(self.optimizer.param_groups)} "
                             "parameter groups: give one (lr, wd) pair per group")


@dataclass
class Losses:
    """What a method's forward computes in one step.

    Attributes:
        terms: Named scalars to log (detached by the engine), fp32.
        totals: One scalar per optimiser name: what that optimiser's parameters minimise.
    """

    terms: dict[str, torch.Tensor]
    totals: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base of every training method; see the module docstring for the contract.

    Subclasses set ``name`` and ``configs``, build their modules in ``__init__(cfg, train)``, and
    implement ``make_policy``, ``trainable``, ``optimizers``, ``schedules``, ``losses``, ``eval_backbones``,
    ``describe``, ``checkpoint_state`` and ``load_checkpoint_state``. The other
    members have defaults that fit a method whose trainable part is one module with no teacher.

    Attributes:
        name: The ``--method`` name.
        configs: (method settings class, training settings class).
        cfg: The method's settings.
        train: The training settings.
        policy: The views of every image.
    """

    name: ClassVar[str]
    configs: ClassVar[tuple[type, type]]
    # A method with per-sample memory over the training set (L-MCL) is built with ``labels``: the
    # class of every training image in dataset-index order, which the engine reads from the pipeline.
    needs_labels: ClassVar[bool] = False
    # What tools/benchmark.py needs to time any method without knowing it by name: the official code's
    # precision on CUDA (its --baseline), and the module whose ``part_functions(cfg, train, device,
    # batch)`` gives the step's unavoidable pieces (--parts; None: no bound).
    official_cuda_precision: ClassVar[str] = "fp32"
    parts_module: ClassVar[str | None] = None
    # Settings added after the method first wrote checkpoints, with the value its older code behaved
    # as: a resume reads a file without them as having that value, so it is refused (and says why)
    # exactly when the setting now differs.
    added_settings: ClassVar[dict[str, Any]] = {}
    policy: MultiCropPolicy

    def __init__(self, cfg: Any, train: Any) -> None:
        super().__init__()
        self.cfg, self.train_cfg = cfg, train
        self.policy = self.views(cfg, train)

    @classmethod
    def benchmark_settings(cls, bench: dict[str, Any]) -> dict[str, Any]:
        """This method's settings (flag name -> value) from ``tools/benchmark.py``'s shared flags.

        ``bench`` holds the benchmark's parsed flags: ``arch_cnn``, ``arch_vit``, ``arch_1``, ``arch_2``,
        ``student_arch``, ``teacher_arch``, ``teacher``, ``out_dim``, ``global_size``, ``local_size``,
        ``local_crops_number``, ``patches``, ``classes``, ``optimizer``. Settings not returned keep their
        defaults; the default maps none, so any method benchmarks at its own defaults.
        """
        return {}

    @classmethod
    def views(cls, cfg: Any, train: Any) -> MultiCropPolicy:
        """``make_policy`` with the run's ``--color_jitter`` applied: what the engine and the tools cut images into."""
        return cls.make_policy(cfg, train).with_jitter(train.color_jitter)

    @classmethod
    def make_policy(cls, cfg: Any, train: Any) -> MultiCropPolicy:
        """The views of every image under these settings (the engine builds the pipeline from it first)."""
        raise NotImplementedError

    @property
    def epochs(self) -> int:
        """Training length; every method config has an ``epochs`` setting."""
        return self.cfg.epochs

    @property
    def single_backward(self) -> bool:
        """One backward pass of the sum of the totals (exact when no two totals share a parameter)."""
        return getattr(self.cfg, "single_backward", True)

    def optimizers(self, fused: bool) -> dict[str, OptimizerSpec]:
        """Named optimisers over ``trainable()``'s parameters; ``fused`` picks fused/foreach kernels."""
        raise NotImplementedError

    def schedules(self, iters_per_epoch: int, world_size: int) -> dict[str, np.ndarray]:
        """Per-step arrays (``[epochs * iters_per_epoch]``): learning rates, decays, momenta; all logged."""
        raise NotImplementedError

    def losses(self, batch: MultiCropBatch, info: StepInfo) -> Losses:
        """Terms and totals of one step, run under the engine's autocast."""
        raise NotImplementedError

    def check_batch(self, batch: MultiCropBatch) -> None:
        """Refuses a batch whose views are not this method's policy's (a pipeline built for another recipe).

        Raises:
            ValueError: Names the method, the views it needs per image and those the batch has.
        """
        n_global, n_local = self.policy.n_global, self.policy.local_crops_number
        has_local = batch.local_crops is not None
        if batch.n_global != n_global or has_local != (n_local > 0):
            raise ValueError(f"--method {self.name} needs {n_global} global view(s) and {n_local} local view(s) per "
                             f"image; the batch has {batch.n_global} global views and {'some' if has_local else 'no'} "
                             "local views")

    def after_step(self, info: StepInfo) -> None:
        """Work after the optimiser steps (EMA, queue updates); none by default."""

    def trainable(self) -> nn.Module:
        """The one module DDP wraps: everything the optimisers update."""
        raise NotImplementedError

    def run_trainable(self) -> nn.Module:
        """What the forward calls: ``trainable()``, or its DDP wrapper once ``distribute`` ran."""
        runner = self.__dict__.get("_runner")
        return self.trainable() if runner is None else runner

    def distribute(self, device: torch.device, sync_bn: bool = True, static_graph: bool = True,
                   bucket_view: bool = True) -> None:
        """Wraps ``trainable()`` in one DDP (call once the process group is up).

        The wrapper is kept out of the module tree, so ``state_dict()`` keys get no ``module.``.
        SyncBatchNorm has no CPU kernel: ``sync_bn`` applies on CUDA only. ``static_graph`` requires
        that every step give the same parameters gradients; ``bucket_view`` lets gradients live in
        the all-reduce buckets.

        Raises:
            ValueError: ``single_backward`` is off: one DDP reduces once per step, so separate backward
                passes per total cannot run under it. The single pass gives the same gradients when no
                two totals share a parameter (tested for every method), so nothing is lost.
        """
        if not self.single_backward:
            raise ValueError("single_backward=False (one backward pass per optimiser) cannot run under DDP, which "
                             "wraps the trained modules once; keep --single_backward True (same gradients, tested)")
        module = self.trainable()
        if sync_bn and device.type == "cuda":
            module = self.convert_sync_batchnorm()
        self.__dict__["_runner"] = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            static_graph=static_graph, gradient_as_bucket_view=bucket_view)

    def convert_sync_batchnorm(self) -> nn.Module:
        """Turns ``trainable()``'s BatchNorms into SyncBatchNorms in place; returns the module."""
        return nn.SyncBatchNorm.convert_sync_batchnorm(self.trainable())

    def compile_regions(self) -> None:
        """``torch.compile`` s the FLOP-carrying modules in place (static shapes); none by default."""

    def channels_last(self) -> None:
        """Puts the convolutional weights in channels-last memory."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)

    def log_values(self, epoch: int) -> dict[str, float]:
        """Further per-epoch values for the log line (e.g. temperatures); none by default."""
        return {}

    def collapse_log_k(self) -> dict[str, float]:
        """``{monitor group: ln K}`` of the groups whose monitors include output distributions over K
        prototypes (``methods.common.monitors.distribution_monitors``), so the uniform collapse can be told; none by default."""
        return {}

    def collapse_advice(self) -> dict[str, str]:
        """``{kind: what to change}`` appended to the collapse warning (kinds: ``prototype``, ``uniform``,
        ``spread``; ``engine.collapse.CollapseWatch``). The default covers the one kind every method monitors."""
        return {"spread": "Embeddings that point one way mostly mean a learning rate too high for the batch: "
                          "lower --lr (L-MCL at four times its official rate collapsed within 40 steps on the shapes)."}

    def eval_backbones(self) -> dict[str, tuple[nn.Module, str]]:
        """``{name: (backbone, "cnn" | "vit")}`` the periodic k-NN evaluates and export writes."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line naming the models and their sizes, for the start of the run."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        """The method's checkpoint entries (the engine adds optimisers, scalers, epoch, its own block)."""
        raise NotImplementedError

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """Loads ``checkpoint_state()``'s entries; returns the rest of ``ckpt``.

        Raises:
            ValueError: The entries are missing or do not fit this model; the message says which.
        """
        raise NotImplementedError
