"""The engine's side of schedules: a method's per-step arrays applied to its tagged parameter groups."""

import numpy as np


class StepSchedules:
    """A method's per-step arrays, applied to its optimisers' tagged parameter groups each step.

    Args:
        arrays: Name -> ``[epochs * iters_per_epoch]`` array (``Method.schedules()``).
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def apply(self, step: int, tagged: list[tuple[list[dict], list[tuple[str, str | None]]]]) -> None:
        """Sets ``lr`` (and ``weight_decay`` where tagged) of every group to this step's value.

        Args:
            step: Global step.
            tagged: Per optimiser, its ``param_groups`` and one (lr array, wd array or None) tag per group.
        """
        for groups, tags in tagged:
            for group, (lr, wd) in zip(groups, tags, strict=True):
                group["lr"] = float(self.arrays[lr][step])  # a Python float: checkpoints hold plain data
                if wd is not None:
                    group["weight_decay"] = float(self.arrays[wd][step])

    def values(self, step: int) -> dict[str, float]:
        """This step's value of every array, for the log and ``StepInfo``."""
        return {name: float(array[step]) for name, array in self.arrays.items()}
