"""The composition bound of MOKD's step (``tools/benchmark.py --mode step --parts``).

A MOKD step cannot be faster than the work it has to do: each student backbone's forward and
backward on exactly the step's crops, each teacher backbone's forward on the global crops, and the
heads (DINO heads and T-heads of the students with their backward, the teachers' heads and feature
search). Each piece is timed alone (``bench/parts.py``), in the precision, memory format and compile
mode the step resolves for the device, on a fresh copy of the model; the sum of their medians is
the bound the step is judged against (``ours / bound`` in the benchmark record). Whatever the step
spends beyond it (losses, centres, clipping, optimisers, EMA, launch gaps) is overhead to find and remove.
"""

from collections.abc import Callable

import torch

from mokd_fast.core.precision import AUTOCAST_DTYPES
from mokd_fast.core.switches import StepSwitches
from mokd_fast.methods.mokd.branches import CNNBranch, ViTBranch
from mokd_fast.methods.mokd.config import MOKDConfig
from mokd_fast.methods.mokd.method import MOKD
from mokd_fast.methods.mokd.train_config import TrainConfig
from mokd_fast.models.vit import vit_tokens
from pipelines.batch import MultiCropBatch


def _scalar(*outputs: torch.Tensor) -> torch.Tensor:
    """One fp32 scalar depending on every output, so backward reaches all of them."""
    return sum(o.float().mean() for o in outputs)

def _cnn_heads(branch: CNNBranch, fmap: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Student CNN heads on a feature map ``[N, C, h, w]``: DINO head, T-head (with its 1x1 projection), query."""
    tokens, query, grid_hw = branch.transhead.project(fmap)
    return branch.head(fmap.mean(dim=(2, 3))), branch.transhead(tokens, grid_hw), query

def _vit_heads(branch: ViTBranch, cls: torch.Tensor, patches: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Student ViT heads on the backbone's CLS ``[N, D]`` and patch tokens ``[N, h*w, D]``."""
    return branch.head(cls), branch.transhead(patches, grid_hw)

def _teacher_cnn_heads(branch: CNNBranch, fmap: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Teacher CNN heads on the global crops' feature map ``[2B, C, h, w]``, with the search."""
    tokens, _, grid_hw = branch.transhead.project(fmap)
    return (branch.head(fmap.mean(dim=(2, 3))), branch.transhead(tokens, grid_hw),
            _search(branch, tokens, grid_hw, queries))

def _search(branch: CNNBranch | ViTBranch, tokens: torch.Tensor, grid_hw: tuple[int, int], queries: torch.Tensor) -> torch.Tensor:
    """The teacher's feature search: T-head over view 1's grid ``[B, h*w, D]`` tiled once per query group."""
    first_view = tokens[: tokens.shape[0] // 2].repeat(queries.shape[0] // (tokens.shape[0] // 2), 1, 1)
    return branch.transhead(first_view, grid_hw, queries)

def part_functions(method: MOKDConfig, cfg: TrainConfig, device: torch.device, batch: MultiCropBatch,
                   model: MOKD | None = None) -> dict[str, Callable[[], None]]:
    """The step's unavoidable pieces as argument-free callables, set up like the step for ``device``.

    Each student piece ends with its own backward (gradients are dropped before each call, as
    ``zero_grad(set_to_none=True)`` does in the step); teacher pieces run under ``no_grad``.

    Args:
        model: The model to time (a fresh ``MOKD(method)`` on ``device`` by default).
    """
    sw = StepSwitches.resolve(cfg, device)
    model = model if model is not None else MOKD(method).to(device)
    students, teachers = model.students, model.teachers
    fmt = torch.channels_last if sw.channels_last else torch.contiguous_format
    if sw.channels_last:
        students.cnn.to(memory_format=fmt)
        teachers.cnn.to(memory_format=fmt)
    g = batch.global_crops.to(device).contiguous(memory_format=fmt)  # [2B, 3, G, G]
    loc = batch.local_crops.to(device).contiguous(memory_format=fmt)  # [L*B, 3, S, S]
    dtype = AUTOCAST_DTYPES[sw.precision]

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def compiled(fn):
        return torch.compile(fn, dynamic=False) if sw.compile else fn

    def cnn_map(branch: CNNBranch):
        return compiled(lambda x: branch._feature_map(branch.backbone, x))

    def vit_run(branch: ViTBranch):
        return compiled(lambda x: vit_tokens(branch.backbone, x))

    s_cnn, s_vit, t_cnn, t_vit = cnn_map(students.cnn), vit_run(students.vit), cnn_map(teachers.cnn), vit_run(teachers.vit)
    s_cnn_heads = compiled(lambda f: _cnn_heads(students.cnn, f))
    s_vit_heads = compiled(lambda c, p, hw: _vit_heads(students.vit, c, p, hw))
    t_cnn_heads = compiled(lambda f, q: _teacher_cnn_heads(teachers.cnn, f, q))
    t_vit_heads = compiled(lambda c, p, hw, q: (*_vit_heads(teachers.vit, c, p, hw), _search(teachers.vit, p, hw, q)))

    # Head inputs of the right shapes, taken once from the backbones (leaves, so the heads' backward
    # computes the input gradients the step sends on into the backbones).
    with torch.no_grad(), autocast():
        fmaps = [s_cnn(x).detach() for x in (g, loc)]  # [N, C, h, w] per group
        vit_out = [s_vit(x) for x in (g, loc)]  # (cls, patches, grid)
    fmaps = [f.requires_grad_() for f in fmaps]
    vit_leaves = [(c.detach().requires_grad_(), p.detach().requires_grad_(), hw) for c, p, hw in vit_out]
    cnn_queries = torch.randn(loc.shape[0], students.vit.backbone.embed_dim, device=device)  # [L*B, D]
    vit_queries = torch.randn_like(cnn_queries)

    def drop_grads() -> None:
        for p in students.parameters():
            p.grad = None
        for leaf in [*fmaps, *(t for c, p, _ in vit_leaves for t in (c, p))]:
            leaf.grad = None

    def student(run: Callable[[torch.Tensor], torch.Tensor | tuple]) -> Callable[[], None]:
        def part() -> None:
            drop_grads()
            with autocast():
                outs = [run(x) for x in (g, loc)]  # one forward per resolution group, as the step
                loss = _scalar(*[t for o in outs for t in (o if isinstance(o, tuple) else (o,))
                                 if isinstance(t, torch.Tensor)])
            loss.backward()
        return part

    def heads() -> None:
        drop_grads()
        with autocast():
            outs = [t for f in fmaps for t in s_cnn_heads(f)]
            outs += [t for c, p, hw in vit_leaves for t in s_vit_heads(c, p, hw)]
            loss = _scalar(*outs)
        loss.backward()

    def teacher(run: Callable[[torch.Tensor], object]) -> Callable[[], None]:
        def part() -> None:
            with torch.no_grad(), autocast():
                run(g)
        return part

    def teacher_heads() -> None:
        with torch.no_grad(), autocast():
            t_cnn_heads(fmaps[0].detach(), vit_queries)
            c, p, hw = vit_leaves[0]
            t_vit_heads(c.detach(), p.detach(), hw, cnn_queries)

    return {
        "cnn_student_backbone": student(s_cnn),
        "vit_student_backbone": student(s_vit),
        "cnn_teacher_backbone": teacher(t_cnn),
        "vit_teacher_backbone": teacher(t_vit),
        "student_heads": heads,
        "teacher_heads_search": teacher_heads,
    }
