"""The error a user can fix: ``train.py`` and the tools report it as a message and an exit status, not a traceback."""


class UsageError(ValueError):
    """A flag, a config file or an input path is wrong; the message says which and what to do."""
