"""DINO's weighted k-nearest-neighbour classifier on L2-normalised features."""

import torch


@torch.no_grad()
def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, ks: list[int], temperature: float, num_classes: int,
                 chunk_elements: int = 2**26) -> dict[int, tuple[float, float]]:
    """Top-1 and top-5 accuracy (percent) of weighted k-NN voting, for every k in ``ks``.

    Each test sample's ``k`` most cosine-similar training samples vote for their class with weight
    ``exp(similarity / temperature)``; classes are ranked by their summed votes. One ``topk`` with
    the largest k serves every k: the k best of a sorted top-K are its first k.

    Args:
        train_features: ``[N, D]`` L2-normalised.
        train_labels: ``[N]`` int64.
        test_features: ``[M, D]`` L2-normalised.
        test_labels: ``[M]`` int64, in the train split's class indices.
        ks: Neighbour counts (each at most N).
        temperature: Voting temperature (0.07 in DINO).
        num_classes: Number of classes.
        chunk_elements: Test rows per chunk are sized so one similarity block has about this many entries.

    Returns:
        ``{k: (top1, top5)}``. Top-5 looks at the ``min(5, k, num_classes)`` best classes, as official,
        but only at classes that got a vote: with ``k < 5`` the official sort ranks vote-less classes
        in an arbitrary order and may count them.
    """
    if max(ks) > len(train_labels):
        raise ValueError(f"--nb_knn {max(ks)} exceeds the {len(train_labels)} training samples")
    train_labels = train_labels.to(train_features.device)
    test_labels = test_labels.to(train_features.device)
    kmax = max(ks)
    rows = max(1, chunk_elements // len(train_labels))
    correct = {k: torch.zeros(2, dtype=torch.long, device=train_features.device) for k in ks}
    for start in range(0, len(test_labels), rows):
        targets = test_labels[start:start + rows]  # [m]
        similarity = test_features[start:start + rows].to(train_features.dtype) @ train_features.T  # [m, N]
        top_sim, top_idx = similarity.topk(kmax, dim=1)  # [m, kmax], sorted
        neighbours = train_labels[top_idx]  # [m, kmax]
        weights = (top_sim / temperature).exp()
        for k in ks:
            votes = torch.zeros(len(targets), num_classes, dtype=weights.dtype, device=weights.device)
            votes.scatter_add_(1, neighbours[:, :k], weights[:, :k])  # [m, C]
            top_votes, ranked = votes.topk(min(5, k, num_classes), dim=1)  # [m, <=5]
            hits = (ranked == targets[:, None]) & (top_votes > 0)
            correct[k] += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])
    total = len(test_labels)
    return {k: (100.0 * c[0].item() / total, 100.0 * c[1].item() / total) for k, c in correct.items()}  # sync point
