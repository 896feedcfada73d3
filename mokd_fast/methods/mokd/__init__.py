"""MOKD: a CNN and a ViT, each with an EMA teacher, distilling into each other."""
