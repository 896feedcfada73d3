"""SEED (ICLR 2021): a frozen self-supervised teacher distilled into a small student through a queue of teacher embeddings."""
