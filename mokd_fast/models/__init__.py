"""Backbones (official aliases and timm names), heads and the MOKD branches."""

from mokd_fast.models.cnn import CNN_ALIASES, build_cnn
from mokd_fast.models.vit import VIT_ALIASES, build_vit

__all__ = ["CNN_ALIASES", "VIT_ALIASES", "build_cnn", "build_vit"]
