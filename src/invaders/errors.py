"""Errors a user can fix: each is told in one line, naming what is wrong and what would be right.

Stages catch ``UserError`` and exit 2 with that line, before any long work where possible. Anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix, explained in one line."""


class ConfigError(UserError, ValueError):
    """A params value, or a combination of values, that is not allowed."""


class InputError(UserError):
    """A file a stage reads is missing, corrupt, or made for another setup (weights, agent card)."""


class ResourceError(UserError):
    """The machine cannot do what was asked (not enough memory for the replay)."""


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""
