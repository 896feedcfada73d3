"""Errors that ``train.py`` reports as a message and an exit status rather than a traceback."""


class UsageError(ValueError):
    """A flag, a config file or an input path is wrong; the message says which and what to do."""


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite; the message names the term and the step."""
