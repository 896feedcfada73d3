"""The training methods ``train.py --method NAME`` can run, as a lazy registry.

``METHODS[name]`` names where a method's class and its two settings dataclasses live; the settings
import without torch (``train.py --help`` lists every method's flags in well under 2 s), the method
class only when a run builds it. To add a method: a package under ``mokd_fast/methods/`` with a
``Method`` subclass (see ``base.py``) and its config dataclasses, and one entry here.
"""

import importlib
from dataclasses import dataclass
from typing import Any


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodEntry:
    """Where a method lives.

    Attributes:
        method: ``module:Class`` of its ``Method`` subclass.
        config: ``module:Class`` of its own settings.
        train_config: ``module:Class`` of its training settings (a ``RunConfig`` subclass).
        summary: One line for ``--help``.
    """

    method: str
    config: str
    train_config: str
    summary: str

    def config_classes(self) -> tuple[type, type]:
        """The two settings dataclasses (torch-free imports)."""
        return _load(self.config), _load(self.train_config)

    def method_class(self) -> type:
        """The ``Method`` subclass (imports torch and the models)."""
        return _load(self.method)


METHODS: dict[str, MethodEntry] = {
    "mokd": MethodEntry("mokd_fast.methods.mokd.method:MOKD", "mokd_fast.methods.mokd.config:MOKDConfig", "mokd_fast.methods.mokd.train_config:TrainConfig",
                        "MOKD (CVPR 2023): a CNN and a ViT, each with an EMA teacher, distilling into each other"),
    "dogo": MethodEntry("mokd_fast.methods.dogo.method:DoGo", "mokd_fast.methods.dogo.config:DoGoConfig",
                        "mokd_fast.methods.dogo.config:DoGoTrainConfig",
                        "DoGo (CVPRW 2021): two self-supervised peers distilling their similarity structure"),
    "seed": MethodEntry("mokd_fast.methods.seed.method:SEED", "mokd_fast.methods.seed.config:SEEDConfig",
                        "mokd_fast.methods.seed.config:SEEDTrainConfig",
                        "SEED (ICLR 2021): a small student distils a frozen self-supervised teacher"),
    "mcl": MethodEntry("mokd_fast.methods.mcl.method:MCL", "mokd_fast.methods.mcl.config:MCLConfig",
                       "mokd_fast.methods.mcl.config:MCLTrainConfig",
                       "MCL-MoCo (AAAI 2022): peers with EMA keys and queues, contrasting within and across peers"),
    "lmcl": MethodEntry("mokd_fast.methods.lmcl.method:LMCL", "mokd_fast.methods.lmcl.config:LMCLConfig",
                        "mokd_fast.methods.lmcl.config:LMCLTrainConfig",
                        "L-MCL (TPAMI 2023): supervised peers with layer-wise mutual contrast against memory banks"),
}


def entry_for_config(cfg: Any) -> tuple[str, MethodEntry]:
    """The method whose settings class ``cfg`` is an instance of.

    Raises:
        TypeError: No registered method has these settings.
    """
    for name, entry in METHODS.items():
        if type(cfg) is entry.config_classes()[0]:
            return name, entry
    raise TypeError(f"{type(cfg).__name__} is no registered method's settings; methods: {sorted(METHODS)}")


def build_method(cfg: Any, train: Any, labels: Any = None) -> Any:
    """The method ``cfg`` configures, built on the CPU; ``labels`` (``[N]``) reach a method that ``needs_labels``."""
    _, entry = entry_for_config(cfg)
    cls = entry.method_class()
    return cls(cfg, train, labels=labels) if cls.needs_labels else cls(cfg, train)
