"""The method-agnostic training loop: step, checkpoints, logs, guards."""
