"""DoGo's peers: the official encoder stems and heads (structure, parameters, outputs)."""

import pytest
import torch

from mokd_fast.methods.dogo.models import Peer, build_encoder
from tests.official_dogo import official_simclr_head, official_simsiam_heads


def _shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(type(m).__name__, tuple(p.shape)) for m in module.modules() for p in m.parameters(recurse=False)]


def test_heads_have_the_official_layers_and_load_official_weights() -> None:
    simclr = Peer("resnet18", "simclr", 128, image_size=32)
    official = official_simclr_head(512, 128)
    assert _shapes(simclr.head.net) == _shapes(official)
    simclr.head.net.load_state_dict(official.state_dict())  # same keys, same shapes
    simsiam = Peer("resnet18", "simsiam", 2048, image_size=32)
    g, h = official_simsiam_heads(512, 2048)
    assert _shapes(simsiam.head.projector) == _shapes(g) and _shapes(simsiam.head.predictor) == _shapes(h)
    assert simsiam.head.projector[-1].affine and simsiam.head.projector[0].bias is not None  # official, not the paper's


def test_small_images_get_the_cifar_stem_and_large_ones_the_fc_feature() -> None:
    small, width = build_encoder("resnet18", small_images=True)
    assert width == 512 and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    peer = Peer("resnet18", "simclr", 128, image_size=224)  # official: keep_fc at >= 100 px
    assert peer.encoder(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    pooled = Peer("resnet18", "simclr", 128, image_size=224, keep_fc=False)
    assert pooled.encoder(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_cifar_stem_overrides_the_size_rule_and_the_feature_stays_pooled() -> None:
    assert Peer("resnet18", "simclr", 128, image_size=64).encoder.conv1.kernel_size == (3, 3)  # official below 100 px
    imagenet = Peer("resnet18", "simclr", 128, image_size=64, cifar_stem=False).encoder
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    assert imagenet(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    assert Peer("resnet18", "simclr", 128, image_size=224, cifar_stem=True).encoder.conv1.kernel_size == (3, 3)


@pytest.mark.parametrize("head", ["simclr", "simsiam"])
def test_peer_outputs_are_normalised(head) -> None:
    peer = Peer("resnet18", head, 64, image_size=32)
    out = peer(torch.randn(4, 3, 32, 32))
    assert set(out) == ({"f", "z"} if head == "simclr" else {"f", "z", "p"})
    for name, t in out.items():
        torch.testing.assert_close(t.norm(dim=1), torch.ones(4), msg=name)
    assert out["z"].shape == (4, 64 if head == "simclr" else 2048)


def test_heterogeneous_peers_a_timm_cnn_and_a_vit() -> None:
    """DoGo's point: peers of different families; any timm CNN (pooled map) or ViT (CLS token)."""
    cnn = Peer("resnet18d", "simclr", 32, image_size=64)
    vit = Peer("vit_tiny", "simsiam", 32, image_size=64)
    x = torch.randn(2, 3, 64, 64)
    assert cnn.encoder(x).shape == (2, 512) and vit.encoder(x).shape == (2, 192)
    assert cnn(x)["z"].shape == (2, 32) and vit(x)["p"].shape == (2, 32)
    with pytest.raises(ValueError, match="unknown CNN"):
        Peer("no_such_net", "simclr", 32, image_size=64)
