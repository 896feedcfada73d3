"""An independent transcription of one official MOKD step, for equivalence tests.

Written from the official ``main_mokd.py``, ``models/mokd.py`` and ``backbones/vision_transformer.py``
(skyoux/mokd): explicit attention instead of SDPA, the weight-norm primitive instead of our module,
the ``scale_factor`` position-embedding arithmetic written out per call site, the per-pair DINO loss
loop and per-loss centers. It reads our modules' weights only, never their forward code, so any
divergence of our fast path from the official maths shows up as a mismatch.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def _attention_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``Block.forward``: pre-norm attention with explicit softmax, then pre-norm MLP."""
    b, n, c = x.shape
    heads = blk.attn.num_heads
    y = blk.norm1(x)
    qkv = F.linear(y, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, blk.attn.proj.weight, blk.attn.proj.bias)
    h = F.gelu(F.linear(blk.norm2(x), blk.mlp.fc1.weight, blk.mlp.fc1.bias))
    return x + F.linear(h, blk.mlp.fc2.weight, blk.mlp.fc2.bias)


def _weight_norm_linear(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, torch._weight_norm(layer.weight_v, layer.weight_g, 0))


def _dino_head(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = head.mlp(x)
    return _weight_norm_linear(head.last_layer, F.normalize(x, dim=-1, p=2))


def _thead_interp(pos: torch.Tensor, npatch: int, w: int, h: int) -> torch.Tensor:
    """``THead_*.interpolate_pos_encoding`` (no patch-size division; ``w`` scales dim 2)."""
    n = pos.shape[1]
    if npatch == n and w == h:
        return pos
    dim = pos.shape[-1]
    w0, h0 = w + 0.1, h + 0.1
    out = F.interpolate(
        pos.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    return out.permute(0, 2, 3, 1).reshape(1, -1, dim)


def _thead_tail(th: torch.nn.Module, x: torch.Tensor, query: torch.Tensor | None) -> torch.Tensor:
    if query is not None:
        x = torch.cat((query.unsqueeze(1), x), dim=1)
    for blk in th.blocks:
        x = _attention_block(blk, x)
    x = th.norm(x)
    if query is not None:
        x = x[:, 1:]
    return _weight_norm_linear(th.last_layer, torch.mean(x, dim=1))


def thead_cnn(th: torch.nn.Module, fmap: torch.Tensor, query: torch.Tensor | None = None):
    """Official ``THead_CNN.forward``: returns (scores, pooled projection)."""
    _, _, h, w = fmap.shape
    x = th.patch_embed(fmap)
    x_pool = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
    x = x.flatten(2).transpose(1, 2)
    x = x + _thead_interp(th.pos_embed, x.shape[1], w, h)
    return _thead_tail(th, x, query), x_pool


def thead_vit(th: torch.nn.Module, tokens: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
    """Official ``THead_ViT.forward``."""
    size = int(math.sqrt(tokens.shape[1]))
    x = tokens + _thead_interp(th.pos_embed, tokens.shape[1], size, size)
    return _thead_tail(th, x, query)


def vit_all_tokens(vit: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``VisionTransformer.forward(return_all_tokens=True)`` on our ViT's weights."""
    _, _, w, h = x.shape
    patch = vit.patch_embed.patch_size[0]
    x = F.conv2d(x, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    npatch, n = x.shape[1] - 1, vit.pos_embed.shape[1] - 1
    if npatch == n and w == h:
        pos = vit.pos_embed
    else:
        dim = x.shape[-1]
        w0, h0 = w // patch + 0.1, h // patch + 0.1
        patch_pos = F.interpolate(
            vit.pos_embed[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
            mode="bicubic",
        )
        pos = torch.cat((vit.pos_embed[:, 0].unsqueeze(0), patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)
    x = x + pos
    for blk in vit.blocks:
        x = _attention_block(blk, x)
    return vit.norm(x)


def resnet_maps(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``ResNet._forward_impl`` with ``fc = Identity``: (pooled, layer4 map)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    f4 = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(f4), 1), f4


class OfficialDINOLoss:
    """Official ``DINOLoss`` with its own center and per-epoch temperature schedule."""

    def __init__(self, out_dim, ncrops, warmup_temp, temp, warmup_epochs, nepochs, world_size=1):
        self.ncrops = ncrops
        self.center = torch.zeros(1, out_dim)
        self.schedule = np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.ones(nepochs - warmup_epochs) * temp))
        self.world_size = world_size

    def __call__(self, student_output, teacher_output, epoch):
        student_out = (student_output / 0.1).chunk(self.ncrops)
        teacher_out = F.softmax((teacher_output - self.center) / self.schedule[epoch], dim=-1).detach().chunk(2)
        total, n = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                n += 1
        total /= n
        with torch.no_grad():
            batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
            if torch.distributed.is_initialized():
                torch.distributed.all_reduce(batch_center)
            batch_center = batch_center / (len(teacher_output) * self.world_size)
            self.center = self.center * 0.9 + batch_center * (1 - 0.9)
        return total


def official_search_loss(student, teacher, temp):
    """Official ``CTSearchLoss``."""
    return torch.sum(-F.softmax(teacher / temp, dim=-1) * F.log_softmax(student / 0.1, dim=-1), dim=-1).mean()


def official_losses(cfg, world_size: int = 1) -> dict[str, OfficialDINOLoss]:
    """The six official loss objects, keyed by the official variable names."""
    n = cfg.local_crops_number + 2
    args = (cfg.out_dim, n, cfg.warmup_teacher_temp, cfg.teacher_temp)
    cnn, vit = cfg.warmup_teacher_temp_epochs_cnn, cfg.warmup_teacher_temp_epochs_vit
    return {
        "loss_cnn_fn": OfficialDINOLoss(*args, cnn, cfg.epochs, world_size),
        "loss_vit_fn": OfficialDINOLoss(*args, vit, cfg.epochs, world_size),
        "loss_cnn_ct_fn": OfficialDINOLoss(*args, vit, cfg.epochs, world_size),
        "loss_vit_ct_fn": OfficialDINOLoss(*args, vit, cfg.epochs, world_size),
        "loss_cnn_thead_fn": OfficialDINOLoss(*args, cnn, cfg.epochs, world_size),
        "loss_vit_thead_fn": OfficialDINOLoss(*args, vit, cfg.epochs, world_size),
    }


def official_step(model, images: list[torch.Tensor], epoch: int, losses: dict[str, OfficialDINOLoss]):
    """The loss part of the official ``train_one_epoch`` for one batch (resnet + alias ViT).

    Returns:
        The eight terms under our names, and the two totals.
    """
    cfg = model.cfg
    n_local = len(images) - 2
    s_cnn, s_vit, t_cnn, t_vit = model.students.cnn, model.students.vit, model.teachers.cnn, model.teachers.vit
    search_temp = np.concatenate((
        np.linspace(cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs_vit),
        np.ones(cfg.epochs - cfg.warmup_teacher_temp_epochs_vit) * cfg.teacher_temp,
    ))[epoch]

    def student_cnn(x):
        fea, fea4 = resnet_maps(s_cnn.backbone, torch.cat(x))
        fea_trans, fea_reduce = thead_cnn(s_cnn.transhead, fea4)
        return _dino_head(s_cnn.head, fea), fea_trans, fea_reduce

    def student_vit(x):
        tokens = vit_all_tokens(s_vit.backbone, torch.cat(x))
        return _dino_head(s_vit.head, tokens[:, 0]), thead_vit(s_vit.transhead, tokens[:, 1:]), tokens[:, 0]

    def teacher_cnn(x, local_token):
        fea, fea4 = resnet_maps(t_cnn.backbone, torch.cat(x))
        fea4_trans, _ = thead_cnn(t_cnn.transhead, fea4)
        search, _ = thead_cnn(t_cnn.transhead, fea4.chunk(2)[0].repeat(n_local, 1, 1, 1), local_token)
        return _dino_head(t_cnn.head, fea), fea4_trans, search

    def teacher_vit(x, local_token):
        tokens = vit_all_tokens(t_vit.backbone, torch.cat(x))
        pth = tokens[:, 1:]
        search = thead_vit(t_vit.transhead, pth.chunk(2)[0].repeat(n_local, 1, 1), local_token)
        return _dino_head(t_vit.head, tokens[:, 0]), thead_vit(t_vit.transhead, pth), search

    s_cnn_m, s_cnn_t_g, _ = student_cnn(images[:2])
    s_cnn_m_l, s_cnn_t_l, s_cnn_out_l = student_cnn(images[2:])
    s_cnn_m = torch.cat([s_cnn_m, s_cnn_m_l])
    s_cnn_t = torch.cat([s_cnn_t_g, s_cnn_t_l])
    s_vit_m, s_vit_t_g, _ = student_vit(images[:2])
    s_vit_m_l, s_vit_t_l, s_vit_out_l = student_vit(images[2:])
    s_vit_m = torch.cat([s_vit_m, s_vit_m_l])
    s_vit_t = torch.cat([s_vit_t_g, s_vit_t_l])
    with torch.no_grad():
        t_cnn_m, t_cnn_t, t_cnn_search_l = teacher_cnn(images[:2], s_vit_out_l.detach())
        t_vit_m, t_vit_t, t_vit_search_l = teacher_vit(images[:2], s_cnn_out_l.detach())
    terms = {
        "cnn_self": losses["loss_cnn_fn"](s_cnn_m, t_cnn_m, epoch),
        "cnn_thead": losses["loss_cnn_thead_fn"](s_cnn_t, t_cnn_t, epoch),
        "cnn_cross": losses["loss_cnn_ct_fn"](s_cnn_m, t_vit_m.detach(), epoch),
        "cnn_search": official_search_loss(s_cnn_t_l, t_vit_search_l.detach(), search_temp),
        "vit_self": losses["loss_vit_fn"](s_vit_m, t_vit_m, epoch),
        "vit_thead": losses["loss_vit_thead_fn"](s_vit_t, t_vit_t, epoch),
        "vit_cross": losses["loss_vit_ct_fn"](s_vit_m, t_cnn_m.detach(), epoch),
        "vit_search": official_search_loss(s_vit_t_l, t_cnn_search_l.detach(), search_temp),
    }
    cnn_total = terms["cnn_self"] + terms["cnn_thead"] + cfg.lamda_c * (terms["cnn_cross"] + terms["cnn_search"])
    vit_total = terms["vit_self"] + terms["vit_thead"] + cfg.lamda_t * (terms["vit_cross"] + terms["vit_search"])
    return terms, cnn_total, vit_total


def official_ema(student: torch.nn.Module, teacher: torch.nn.Module, m: float) -> None:
    """Official per-parameter EMA loop."""
    with torch.no_grad():
        for param_q, param_k in zip(student.parameters(), teacher.parameters()):
            param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
