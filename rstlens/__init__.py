"""rstlens: who reset this TCP connection, and why?

    >>> import rstlens
    >>> result = rstlens.analyze("capture.pcap", outdir="out")
    >>> result.resets[["src_h", "cause", "confidence", "evidence"]]

`analyze` reads captures, rebuilds every TCP connection and attributes each RST to a cause
(closed_port, half_open, abort, middlebox or unknown); `read` loads an earlier run.
"""

from rstlens._api import Analysis, analyze, read
from rstlens._version import __version__
from rstlens.parsers import CaptureError, RstlensError

__all__ = ["Analysis", "CaptureError", "RstlensError", "__version__", "analyze", "read"]
