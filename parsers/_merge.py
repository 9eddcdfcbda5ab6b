"""Streaming k-way merge of per-input batch streams into one timeline.

Within one input the order is never changed (timestamps may go backwards).  Merging by
each input's running maximum timestamp reproduces exactly what a classic head-of-queue
merge does on unsorted inputs, while letting numpy do the work a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._batch import PacketBatch

_INF = np.iinfo(np.int64).max


def merge_streams(
    streams: list[Iterator[PacketBatch]], batch_size: int = 4096
) -> Iterator[PacketBatch]:
    """Merge batch streams by timestamp; ties go to the lower stream index.

    Holds at most about one batch per stream beyond what it emits.
    """
    if len(streams) == 1:
        yield from streams[0]
        return
    n = len(streams)
    pending: list[PacketBatch | None] = [None] * n
    keys: list[np.ndarray | None] = [None] * n
    run_max = [np.iinfo(np.int64).min] * n
    live = [True] * n
    while True:
        for i in range(n):
            while live[i] and (pending[i] is None or len(pending[i]) == 0):
                nxt = next(streams[i], None)
                if nxt is None:
                    live[i] = False
                    break
                if len(nxt) == 0:
                    continue
                k = np.maximum.accumulate(np.maximum(nxt.ts_us, run_max[i]))
                run_max[i] = int(k[-1])
                pending[i], keys[i] = nxt, k
        if not any(p is not None and len(p) for p in pending):
            return
        # A row (key, s) is final once no live input can still produce a row that sorts
        # before it: their future keys are >= their last key (keys are running maxima).
        last = {i: int(keys[i][-1]) for i in range(n) if live[i] and keys[i] is not None}
        parts: list[PacketBatch] = []
        part_keys: list[np.ndarray] = []
        for i in range(n):
            p, k = pending[i], keys[i]
            if p is None or k is None or len(p) == 0:
                continue
            mark = min((v if j > i else v - 1 for j, v in last.items() if j != i), default=_INF)
            cut = int(np.searchsorted(k, mark, side="right"))
            if cut == 0:
                continue
            parts.append(p.take(slice(0, cut)))
            part_keys.append(k[:cut])
            pending[i], keys[i] = p.take(slice(cut, None)), k[cut:]
        if not parts:
            continue
        joined = PacketBatch.concat(parts)
        order = np.lexsort((joined.source, np.concatenate(part_keys)))  # stable within input
        out = joined.take(order)
        for s in range(0, len(out), batch_size):
            yield out.take(slice(s, s + batch_size))
