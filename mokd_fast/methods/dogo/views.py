"""DoGo's views: each peer its own two views, drawn with its own transform (official ``MultiTransform``).

Peer 1 (SimCLR in the official template) and peer 2 (SimSiam) each get two views, so a batch holds
four same-size global views and no local view: views 0-1 for peer 1, 2-3 for peer 2. The KL
between the peers therefore compares similarity matrices computed on different augmentations, as
official. Official transforms (augmentations/*.py): bilinear RandomResizedCrop with torchvision's
default scale (0.08, 1); flip 0.5; colour jitter (0.8, 0.8, 0.8, 0.2) for SimCLR and (0.4, 0.4, 0.4,
0.1) for SimSiam, p 0.8; grayscale p 0.2, which the SimSiam transform applies twice; a Gaussian blur
(sigma 0.1-2, p 0.5) only at 224 px; normalisation by image size.
"""

from pipelines.policy import IMAGENET_MEAN, IMAGENET_STD, MultiCropPolicy, ViewPolicy

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
HALF = (0.5, 0.5, 0.5)
JITTER = {"simclr": (0.8, 0.8, 0.8, 0.2), "simsiam": (0.4, 0.4, 0.4, 0.1)}


def peer_view(kind: str, size: int) -> ViewPolicy:
    """One view of the official SimCLR or SimSiam transform at ``size`` pixels."""
    if kind not in JITTER:
        raise ValueError(f"DoGo view kind {kind!r}: choose one of {tuple(JITTER)}")
    return ViewPolicy(size, (0.08, 1.0), interpolation="bilinear", flip_p=0.5, jitter=JITTER[kind], jitter_p=0.8,
                      grayscale_p=0.2, extra_grayscale_p=0.2 if kind == "simsiam" else 0.0,
                      blur_p=0.5 if size == 224 else 0.0, blur_sigma=(0.1, 2.0), solarize_p=0.0)


def normalisation(size: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The official mean and std for an image size.

    Raises:
        ValueError: At 64 px the official code normalises with Tiny-ImageNet statistics, which are
            not transcribed here; pass the data's own mean and std.
    """
    if size == 32:
        return CIFAR_MEAN, CIFAR_STD
    if size == 96:
        return HALF, HALF
    if size == 64:
        raise ValueError("DoGo at 64 px normalises with Tiny-ImageNet statistics in the official code; "
                         "give the data's mean and std explicitly")
    return IMAGENET_MEAN, IMAGENET_STD


def dogo_policy(size: int, peers: tuple[str, str] = ("simclr", "simsiam"),
                mean: tuple[float, float, float] | None = None,
                std: tuple[float, float, float] | None = None) -> MultiCropPolicy:
    """Four global views (two per peer, each peer's own transform) and no local views."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    mean, std = (mean, std) if mean is not None else normalisation(size)
    views = tuple(peer_view(kind, size) for kind in peers for _ in range(2))
    return MultiCropPolicy(views, peer_view(peers[0], size), local_crops_number=0, mean=mean, std=std)
