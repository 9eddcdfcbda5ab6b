"""The project's exception types.  Bad *input data* never raises: it is recorded on the
`InputInfo` of the input concerned.  Only misuse (e.g. a bad BPF expression) raises."""

from __future__ import annotations


class RstlensError(Exception):
    """Base of every exception rstlens raises on purpose."""


class CaptureError(RstlensError):
    """A capture could not be opened or filtered as asked (message is one line)."""
