"""The one door from the reports into the core: every name the reports take from `rstlens`
is imported here (inside functions, so `import rstlens.reports` stays cheap), so that when
the core's modules move only this file changes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from rstlens.summary import Summary

RunPath = str | os.PathLike[str]


@dataclass
class Run:
    """One or several `rstlens analyze` outputs read together."""

    flows: pd.DataFrame
    resets: pd.DataFrame
    parts: list[Path] = field(default_factory=list)  # the directories read
    summaries: list[Summary] = field(default_factory=list)  # one per part
    metadata: list[dict[str, Any]] = field(default_factory=list)  # one per part


class RunNotFound(ValueError):
    """A path that is neither an analyze output nor a directory of them."""


def run_parts(path: RunPath) -> list[Path]:
    """The analyze output directories in `path`: itself, or (a partitioned dataset) every
    directory below it that holds a flows.parquet, in name order."""
    from rstlens.output.dataset import is_dataset

    root = Path(path)
    if (root / "flows.parquet").is_file() or is_dataset(root):
        return [root]  # a rolling dataset (analyze --rotate) is read whole by rstlens.read
    parts = sorted(p.parent for p in root.rglob("flows.parquet")) if root.is_dir() else []
    if not parts:
        raise RunNotFound(f"{root}: no flows.parquet here or below (not an analyze output)")
    return parts


def load(paths: RunPath | Sequence[RunPath]) -> Run:
    """Read one run directory or several (or partitioned datasets) into one `Run`."""
    import rstlens
    from rstlens.output.writer import read_metadata

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    parts = [part for p in paths for part in run_parts(p)]
    analyses = [rstlens.read(part) for part in parts]
    metadata = [_metadata(part, read_metadata) for part in parts]
    if len(analyses) == 1:
        flows, resets = analyses[0].flows, analyses[0].resets
    else:
        flows = _concat([a.flows for a in analyses])
        resets = _concat([a.resets for a in analyses])
    return Run(flows, resets, parts, [a.summary for a in analyses], metadata)


def _metadata(part: Path, read_metadata: Any) -> dict[str, Any]:
    """The metadata of a run directory's flows file, or of a dataset's newest part."""
    from rstlens.output.dataset import is_dataset, list_parts

    if is_dataset(part):
        pairs = [p for p in list_parts(part) if p.resets is not None]
        return dict(read_metadata(pairs[-1].flows)) if pairs else {}
    return dict(read_metadata(part / "flows.parquet"))


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate runs, keeping enumerations categorical (pandas falls back to object
    when the parts' categories differ)."""
    import pandas as pd

    frames = list(frames)
    out = pd.concat(frames, ignore_index=True)
    for name, dtype in frames[0].dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype) and not isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype("category")
    return out


def vocabularies() -> dict[str, tuple[str, ...]]:
    """The enumerations of the output schema, in their documented order."""
    from rstlens.output import schema as _schema

    return {
        "cause": _schema.CAUSES,
        "subcause": _schema.SUBCAUSES,
        "conn_state": _schema.CONN_STATES,
        "rst_sender": _schema.RST_SENDERS,
        "acceptability": _schema.ACCEPTABILITY,
    }


def evidence_text(code: str) -> str:
    """The README's one-line explanation of an evidence code."""
    from rstlens.attribution.evidence import describe

    return describe(code)


def explain_lines(outdir: Path, uid: str, context: int = 4) -> list[str]:
    """`rstlens explain OUTDIR UID`'s output, as lines; LookupError when the uid is not
    in that run."""
    from rstlens.cli.explain import explain_lines as lines

    return lines(outdir, uid, (), context)


def rstlens_version() -> str:
    from rstlens._version import __version__

    return __version__
