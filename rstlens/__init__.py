"""rstlens: who reset this TCP connection, and why?"""

__version__ = "0.1.0"
