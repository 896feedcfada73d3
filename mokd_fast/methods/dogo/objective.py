"""DoGo's step objective: each peer's self-supervised loss plus its weighted similarity KL towards the other.

From the official ``util/train_util.py`` (``train_one_epoch``):
- self-supervised terms: NT-Xent on a SimCLR peer's projections, the SimSiam loss on a SimSiam
  peer's predictions and projections;
- what enters the KL: a SimCLR peer's projections ``z``; a SimSiam peer's predictions ``p``, except
  when both peers are SimSiam, where each peer's ``p`` is compared with the other's ``z``;
- totals: ``L1 = ssl1 + w1 * KL(peer 2 || peer 1)`` and ``L2 = ssl2 + w2 * KL(peer 1 || peer 2)``,
  official weights 100 and 1 (``criterion_weight[2:4]``). The totals share no parameter (each KL
  target is detached), so one backward pass of their sum gives the official two passes' gradients.
"""

import torch

from mokd_fast.methods.dogo.losses import nt_xent, similarity_kl, simsiam_loss

OFFICIAL_KL_WEIGHTS = (100.0, 1.0)


def _own(kind: str, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The embedding a peer's own similarity matrix is built from: ``p`` for SimSiam, ``z`` for SimCLR."""
    return out["p"] if kind == "simsiam" else out["z"]


def _ssl(kind: str, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], temperature: float,
         global_batch: bool) -> torch.Tensor:
    if kind == "simclr":
        return nt_xent(x["z"], y["z"], temperature, global_batch=global_batch)
    return simsiam_loss(x["p"], y["p"], x["z"], y["z"])


def dogo_objective(kinds: tuple[str, str], outputs: tuple[tuple[dict, dict], tuple[dict, dict]],
                   kl_weights: tuple[float, float] = OFFICIAL_KL_WEIGHTS, kl_temperature: float = 0.1,
                   global_batch: bool = False, ntxent_temperature: float = 0.5) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Named terms and the two totals of one DoGo step.

    Args:
        kinds: Each peer's head, "simclr" or "simsiam".
        outputs: ``((peer 1 on its view x, on its view y), (peer 2 on x, on y))``, each a
            ``models.Peer`` output dict of ``[B, D]`` normalised tensors.
        kl_weights: Weights of peer 1's and peer 2's KL terms (official 100 and 1).
        kl_temperature: The similarity temperature (official ``KL_temperature``: 0.1).
        global_batch: Under DDP, NT-Xent and the KL over the whole batch (see ``losses``).
        ntxent_temperature: A SimCLR peer's NT-Xent temperature (official: 0.5, hard-coded).

    Returns:
        ``terms`` (``ssl_1, kl_1, ssl_2, kl_2``) and ``totals`` (``peer_1, peer_2``), fp32 scalars.
    """
    (x1, y1), (x2, y2) = outputs
    both_simsiam = kinds == ("simsiam", "simsiam")

    def target(kind: str, out: dict[str, torch.Tensor]) -> torch.Tensor:  # the other peer, as this peer's target
        return out["z"] if both_simsiam else _own(kind, out)

    terms = {
        "ssl_1": _ssl(kinds[0], x1, y1, ntxent_temperature, global_batch),
        "kl_1": similarity_kl(_own(kinds[0], x1), _own(kinds[0], y1), target(kinds[1], x2), target(kinds[1], y2),
                              kl_temperature, global_batch),
        "ssl_2": _ssl(kinds[1], x2, y2, ntxent_temperature, global_batch),
        "kl_2": similarity_kl(_own(kinds[1], x2), _own(kinds[1], y2), target(kinds[0], x1), target(kinds[0], y1),
                              kl_temperature, global_batch),
    }
    totals = {"peer_1": terms["ssl_1"] + kl_weights[0] * terms["kl_1"],
              "peer_2": terms["ssl_2"] + kl_weights[1] * terms["kl_2"]}
    return terms, totals
