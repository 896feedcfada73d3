"""The SwAV ResNet-50 family (widths 1, 2, 4, 5), built from torchvision's Bottleneck with SwAV's key names.

SwAV (facebookresearch/swav ``src/resnet50.py``, copied into SEED as ``swav_resnet.py``) widens
every stage of a ResNet-50 by ``w``: a stem of 64w channels, stages of 64w/128w/256w/512w planes,
so a feature of 2048w. Its keys are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``downsample.0/1``), so the released weights load directly after the ``module.`` prefix goes. The
official stem pads the image by 1 with zeros (``ConstantPad2d``) and then convolves with padding 2:
the same zeros as torchvision's padding 3, so the torchvision convolution is used (a test checks).
"""

import torch.nn as nn
from torchvision.models.resnet import Bottleneck, ResNet

SWAV_WIDTHS = (1, 2, 4, 5)


def swav_resnet50(width: int) -> ResNet:
    """A randomly initialised SwAV ResNet-50 of width ``width``, classifier removed (pooled ``[N, 2048 w]`` output).

    Raises:
        ValueError: ``width`` is not one SwAV released.
    """
    if width not in SWAV_WIDTHS:
        raise ValueError(f"SwAV ResNet-50 width {width}: SwAV released widths {SWAV_WIDTHS}")
    net = ResNet(Bottleneck, [3, 4, 6, 3])
    stem = 64 * width
    net.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(stem)
    net.inplanes = stem
    # torchvision's _make_layer with base width 64 gives every Bottleneck an inner width equal to its planes.
    net.layer1 = net._make_layer(Bottleneck, 64 * width, 3)
    net.layer2 = net._make_layer(Bottleneck, 128 * width, 4, stride=2)
    net.layer3 = net._make_layer(Bottleneck, 256 * width, 6, stride=2)
    net.layer4 = net._make_layer(Bottleneck, 512 * width, 3, stride=2)
    net.fc = nn.Identity()
    return net
