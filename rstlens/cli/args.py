"""tcpdump-style argument habits shared by the sub-commands."""

from __future__ import annotations

import os
from collections.abc import Sequence


def _looks_like_input(arg: str) -> bool:
    """An existing path or "-"; else a word that looks like a file name.  Anything with
    white space is a filter expression given as one quoted argument ('host 10.0.0.7')."""
    if arg == "-" or os.path.exists(arg):
        return True
    if any(c.isspace() for c in arg):
        return False
    return os.sep in arg or "." in arg.split(os.sep)[-1]


def split_inputs_and_filter(args: Sequence[str]) -> tuple[list[str], str | None]:
    """Leading arguments that name a path (or "-" for stdin) are inputs; the words after
    them are a BPF filter expression, as with ``tcpdump -r FILE EXPRESSION``."""
    files: list[str] = []
    words = list(args)
    while words and _looks_like_input(words[0]):
        files.append(words.pop(0))
    if not files and words:
        files.append(words.pop(0))  # let the reader report what is wrong with it
    return files, " ".join(words) or None
