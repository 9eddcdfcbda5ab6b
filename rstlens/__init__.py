"""rstlens: who reset this TCP connection, and why?

    >>> import rstlens
    >>> result = rstlens.analyze("capture.pcap", outdir="out")
    >>> result.resets[["src_h", "cause", "confidence", "evidence"]]

`analyze` reads captures, rebuilds every TCP connection and attributes each RST to a cause
(closed_port, half_open, abort, middlebox or unknown); `read` loads an earlier run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rstlens._lazy import lazy_getattr
from rstlens._version import __version__

if TYPE_CHECKING:
    from rstlens.api import Analysis, analyze, read
    from rstlens.errors import CaptureError, RstlensError
    from rstlens.summary import Summary

# Imported on first use: the command line does not need pandas, and start-up time counts.
_LAZY = {
    "Analysis": "rstlens.api",
    "analyze": "rstlens.api",
    "read": "rstlens.api",
    "CaptureError": "rstlens.errors",
    "RstlensError": "rstlens.errors",
    "Summary": "rstlens.summary",
}

__all__ = ["Analysis", "CaptureError", "RstlensError", "Summary", "__version__", "analyze", "read"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
