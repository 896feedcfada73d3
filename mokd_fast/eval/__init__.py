"""Evaluation of pre-trained backbones: k-NN and linear probes on frozen features, and weight export."""
