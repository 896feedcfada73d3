"""A transcription of DoGo's official loss modules (NeurAI-Lab/DoGo branch ``dogo`` @ b947d67), for parity tests.

Written from the specification of ``criterion/ntxent.py``, ``criterion/simsiam_loss.py`` and
``criterion/kl.py``: the official operations in the official order (broadcast cosine similarity,
the boolean positive mask, ``softmax(...).log()``, ``KLDivLoss``'s default mean), not our fast forms.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def positive_mask(batch_size: int) -> torch.Tensor:
    """``[2B, 2B]``: True for the negatives of each row (self and positive excluded)."""
    n = 2 * batch_size
    mask = torch.ones(n, n, dtype=torch.bool)
    mask.fill_diagonal_(False)
    for i in range(batch_size):
        mask[i, batch_size + i] = False
        mask[batch_size + i, i] = False
    return mask


class NTXent(nn.Module):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.temperature = 0.5
        self.mask = positive_mask(batch_size)
        self.criterion = nn.CrossEntropyLoss(reduction="sum")
        self.similarity_f = nn.CosineSimilarity(dim=2)

    def forward(self, zx: torch.Tensor, zy: torch.Tensor) -> torch.Tensor:
        n = 2 * self.batch_size
        p1 = torch.cat((zx, zy), dim=0)
        sim = self.similarity_f(p1.unsqueeze(1), p1.unsqueeze(0)) / self.temperature
        sim_ij = torch.diag(sim, self.batch_size)
        sim_ji = torch.diag(sim, -self.batch_size)
        positive = torch.cat((sim_ij, sim_ji), dim=0).reshape(n, 1)
        negative = sim[self.mask].reshape(n, -1)
        labels = torch.zeros(n, dtype=torch.long)
        logits = torch.cat((positive, negative), dim=1)
        return self.criterion(logits, labels) / n


class SimSiamLoss(nn.Module):
    def forward(self, zx: torch.Tensor, zy: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        loss = -(zx.detach() * py).sum(dim=1).mean()
        loss += -(zy.detach() * px).sum(dim=1).mean()
        return loss / 2


class KLLoss(nn.Module):
    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.T = temperature
        self.sim = nn.CosineSimilarity(dim=2)
        self.kl = nn.KLDivLoss()

    def forward(self, x, y, peer_x, peer_y) -> tuple[torch.Tensor, torch.Tensor]:
        s_s = F.softmax(self.sim(x.unsqueeze(1), y.unsqueeze(0)) / self.T, dim=1)
        s_t = F.softmax(self.sim(peer_x.unsqueeze(1), peer_y.unsqueeze(0)) / self.T, dim=1)
        return self.kl(s_s.log(), s_t.detach()), self.kl(s_t.log(), s_s.detach())


def official_simclr_head(in_dim: int, n_proj: int) -> nn.Sequential:
    """models/simclr.py's projector g."""
    return nn.Sequential(nn.Linear(in_dim, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                         nn.Linear(512, n_proj, bias=True))


def official_simsiam_heads(in_dim: int, n_proj: int) -> tuple[nn.Sequential, nn.Sequential]:
    """models/simsiam.py's projector g and predictor h."""
    g = nn.Sequential(nn.Linear(in_dim, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                      nn.Linear(2048, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                      nn.Linear(2048, 2048), nn.BatchNorm1d(2048))
    h = nn.Sequential(nn.Linear(2048, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                      nn.Linear(512, n_proj))
    return g, h


def official_step_totals(kinds: tuple[str, str], outputs, batch_size: int, weights=(100.0, 1.0),
                         temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """util/train_util.py train_one_epoch's two totals, with the official modules and call pattern."""
    ntxent, simsiam, kl = NTXent(batch_size), SimSiamLoss(), KLLoss(temperature)
    (x1, y1), (x2, y2) = outputs

    def ssl(kind, x, y):
        return ntxent(x["z"], y["z"]) if kind == "simclr" else simsiam(x["z"], y["z"], x["p"], y["p"])

    if kinds == ("simsiam", "simsiam"):
        loss_s, _ = kl(x1["p"], y1["p"], x2["z"], y2["z"])
        _, loss_t = kl(x1["z"], y1["z"], x2["p"], y2["p"])
    else:
        def rep(kind, out):
            return out["p"] if kind == "simsiam" else out["z"]
        loss_s, loss_t = kl(rep(kinds[0], x1), rep(kinds[0], y1), rep(kinds[1], x2), rep(kinds[1], y2))
    return ssl(kinds[0], x1, y1) + weights[0] * loss_s, ssl(kinds[1], x2, y2) + weights[1] * loss_t
