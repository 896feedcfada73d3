"""Errors that ``train.py`` reports as a message and an exit status rather than a traceback.

``UsageError`` is defined by the data layer (``pipelines.errors``), which raises it too, and
re-exported here for the rest of ``mokd_fast``.
"""

from pipelines.errors import UsageError

__all__ = ["NonFiniteLoss", "UsageError"]


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the term and the step."""
