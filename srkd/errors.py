"""User-facing errors.

Anything a user can cause (bad path, unknown name, wrong scale, offline hub) raises
:class:`SrkdError`; the CLI prints its message as one line and exits non-zero. Bugs stay
ordinary exceptions so that they keep their tracebacks.
"""


class SrkdError(Exception):
    """An error caused by user input or environment, reported as one line."""


class SrkdWarning(UserWarning):
    """A decision the user should know about (precision fallback, compile failure)."""
