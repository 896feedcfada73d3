"""The collapse watch: one warning, with the step and the numbers, when the logged monitors stay collapsed.

The monitors themselves (``methods/common/monitors.py``) are computed by each method as loss terms;
this reads them from the reduced log line, so every rank decides the same.
"""

from dataclasses import dataclass, field


@dataclass
class CollapseWatch:
    """Says once, with the step and the numbers, when the logged monitors show collapse for ``window`` log lines.

    A monitor group (the names sharing a prefix before ``mean_entropy``/``sample_entropy``/``distinct``/
    ``spread``) is collapsed at a log line when its outputs concentrate on one prototype (``distinct``
    at most ``max_distinct`` and ``mean_entropy`` at most ``max_mean_entropy``), when they are uniform
    (``sample_entropy`` at least ``uniform_fraction`` of ln K; ``log_k`` gives ln K per group), or
    when its embedding spread is at most ``max_spread``.

    Attributes:
        window: Consecutive collapsed log lines before the warning.
        max_distinct: Distinct-argmax fraction at or below which outputs count as one prototype.
        max_mean_entropy: Mean-distribution entropy (nats) at or below which they do.
        uniform_fraction: Share of ln K at or above which per-sample outputs count as uniform.
        max_spread: Embedding spread at or below which embeddings count as collapsed. Low on purpose:
            projections of ReLU features sit close together in healthy runs (measured: MCL peers at
            0.02 to 0.1 before their queues fill, L-MCL embeddings at 0.006 while its classifiers
            learn), while a collapsed network (one output for every image) measured 0.0000 to 0.0007.
        log_k: ``{group: ln K}`` of each group's output width.
        advice: ``{kind: what to change}`` for the kinds ``prototype``, ``uniform`` and ``spread``, from the
            method (``Method.collapse_advice``); the warning ends with the advice of every kind it names,
            so a user sees the flags that fix their run where they see the problem.
    """

    window: int = 5
    max_distinct: float = 0.05
    max_mean_entropy: float = 0.5
    uniform_fraction: float = 0.98
    max_spread: float = 0.002
    log_k: dict[str, float] = field(default_factory=dict)
    advice: dict[str, str] = field(default_factory=dict)
    _runs: dict[str, int] = field(default_factory=dict)
    fired: bool = False

    def reasons(self, values: dict[str, float]) -> dict[str, str]:
        """``{group: why}`` for every group collapsed in this log line's ``values``."""
        return {group: why for group, (_, why) in self._kinds(values).items()}

    def _kinds(self, values: dict[str, float]) -> dict[str, tuple[str, str]]:
        """``{group: (kind, why)}`` for every collapsed group; kind is ``prototype``, ``uniform`` or ``spread``."""
        out = {}
        for group in {k.rsplit("_", 1)[0] for k in values if k.endswith(("_distinct", "_spread"))}:
            distinct, mean_h = values.get(f"{group}_distinct"), values.get(f"{group}_mean_entropy")
            sample_h, spread = values.get(f"{group}_sample_entropy"), values.get(f"{group}_spread")
            if distinct is not None and mean_h is not None and distinct <= self.max_distinct and mean_h <= self.max_mean_entropy:
                out[group] = ("prototype",
                              f"one prototype for every image (distinct {distinct:.3f}, mean entropy {mean_h:.3f})")
            elif sample_h is not None and group in self.log_k and sample_h >= self.uniform_fraction * self.log_k[group]:
                out[group] = ("uniform",
                              f"uniform outputs (per-sample entropy {sample_h:.3f} of ln K = {self.log_k[group]:.3f})")
            elif spread is not None and spread <= self.max_spread:
                out[group] = ("spread", f"embeddings point one way (spread {spread:.3f})")
        return out

    def update(self, step: int, values: dict[str, float]) -> str | None:
        """The warning line, the first time some group has been collapsed for ``window`` log lines in a row."""
        kinds = self._kinds(values)
        for group in set(self._runs) | set(kinds):
            self._runs[group] = self._runs.get(group, 0) + 1 if group in kinds else 0
        sustained = {g: kinds[g] for g, n in self._runs.items() if n >= self.window and g in kinds}
        if not sustained or self.fired:
            return None
        self.fired = True
        detail = "; ".join(f"{g}: {why}" for g, (_, why) in sorted(sustained.items()))
        hints = [self.advice[kind] for kind in dict.fromkeys(kind for _, (kind, _) in sorted(sustained.items()))
                 if kind in self.advice]
        return (f"WARNING: collapse at step {step}, sustained over the last {self.window} log lines: {detail}. "
                + "".join(f"{hint} " for hint in hints)
                + "The total loss can still fall; see docs/learning-health.md")
