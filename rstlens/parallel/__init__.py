"""Using more than one core (`analyze -j N`) and more than one machine (`analyze --dask`).

- `threads`: the pipeline's stages on threads of their own (the capture reader and
  decoder ahead of the flow core; the kernels release the GIL), same rows in the same order;
- `dask`: a rotated capture set of several sensors spread over a Dask cluster, one
  partitioned dataset out (`rstlens.output.dataset`'s layout).
"""

from __future__ import annotations

import os


def effective_jobs(jobs: int) -> int:
    """`-j N` as a number of cores: 0 means every core this process may run on."""
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0, not {jobs}")
    if jobs:
        return jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
