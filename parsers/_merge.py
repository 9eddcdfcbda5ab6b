"""Streaming k-way merge of per-input batch streams into one timeline.

Within one input the order is never changed (timestamps may go backwards).  Merging by
each input's running maximum timestamp reproduces exactly what a classic head-of-queue
merge does on unsorted inputs, while letting numpy do the work a batch at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from ._batch import PacketBatch
from ._decode import RawBatch
from ._info import InputInfo

_INF = np.iinfo(np.int64).max


def running_max(ts_us: np.ndarray, floor: int) -> np.ndarray:
    """Merge keys of one input's next rows: the running maximum of their timestamps, from
    `floor` (the input's last key so far).  Within an input keys never go down, whatever
    its timestamps do."""
    keys: np.ndarray = np.maximum.accumulate(np.maximum(ts_us, floor))
    return keys


def last_keys(keys: Sequence[np.ndarray | None], live: Sequence[bool]) -> dict[int, int]:
    """The newest key of each input that can still deliver rows."""
    return {i: int(k[-1]) for i, k in enumerate(keys) if live[i] and k is not None}


def final_rows(keys: np.ndarray, i: int, last: dict[int, int]) -> int:
    """How many of input `i`'s pending rows (merge keys `keys`) are final.

    A row (key, i) is final once no live input can still produce a row that sorts before
    it: an input's future keys are >= its last key (keys are running maxima), and ties go
    to the lower input index."""
    mark = min((v if j > i else v - 1 for j, v in last.items() if j != i), default=_INF)
    return int(np.searchsorted(keys, mark, side="right"))


def _has_rows(batch: PacketBatch | None) -> bool:
    return batch is not None and len(batch) > 0


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
            while live[i] and not _has_rows(pending[i]):
                nxt = next(streams[i], None)
                if nxt is None:
                    live[i] = False
                    break
                if len(nxt) == 0:
                    continue
                new_keys = running_max(nxt.ts_us, run_max[i])
                run_max[i] = int(new_keys[-1])
                pending[i], keys[i] = nxt, new_keys
        if not any(_has_rows(p) for p in pending):
            return
        last = last_keys(keys, live)
        parts: list[PacketBatch] = []
        part_keys: list[np.ndarray] = []
        for i in range(n):
            p, k = pending[i], keys[i]
            if p is None or k is None or len(p) == 0:
                continue
            cut = final_rows(k, i, last)
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


class RecordCut:
    """The first `n` records of the merged timeline of several raw record streams.

    ``tcpdump -c n`` on the merged inputs: records of all inputs are ordered as
    `merge_streams` orders rows (running maximum timestamp per input, ties to the lower
    index) and only the first `n` are passed on, each input's share through
    ``streams()[i]``.  Every record counts, TCP or not, so the cut is made on raw records
    before decoding.  Reads ahead by about one batch per input; once `n` records are
    released the sources are closed and nothing more is read.
    """

    def __init__(self, sources: list[Iterator[RawBatch]], n: int, infos: list[InputInfo] | None = None) -> None:
        self._src = sources
        self._left = n
        k = len(sources)
        self._pending: list[RawBatch | None] = [None] * k
        self._keys: list[np.ndarray | None] = [None] * k
        self._run_max = [np.iinfo(np.int64).min] * k
        self._live = [True] * k
        self._out: list[deque[RawBatch]] = [deque() for _ in range(k)]
        self.released = [0] * k
        self._infos = infos
        self._done = n <= 0
        if self._done:
            self._close()

    def streams(self) -> list[Iterator[RawBatch]]:
        return [self._stream(i) for i in range(len(self._src))]

    def _stream(self, i: int) -> Iterator[RawBatch]:
        while True:
            if self._out[i]:
                yield self._out[i].popleft()
            elif self._done or (not self._live[i] and self._pending[i] is None):
                return
            else:
                self._advance()

    def _close(self) -> None:
        for i, src in enumerate(self._src):
            if self._live[i]:
                self._live[i] = False
                close = getattr(src, "close", None)
                if close is not None:
                    close()
        self._pending = [None] * len(self._src)
        self._keys = [None] * len(self._src)

    def _advance(self) -> None:
        n = len(self._src)
        for i in range(n):
            while self._live[i] and self._pending[i] is None:
                nxt = next(self._src[i], None)
                if nxt is None:
                    self._live[i] = False
                    break
                if len(nxt) == 0:
                    continue
                new_keys = running_max(nxt.ts_us, self._run_max[i])
                self._run_max[i] = int(new_keys[-1])
                self._pending[i], self._keys[i] = nxt, new_keys
        if self._infos is not None:  # readers count what they read, not what was kept
            for i, info in enumerate(self._infos):
                info.packets = self.released[i]
        if all(p is None for p in self._pending):
            self._done = True
            return
        last = last_keys(self._keys, self._live)
        finals: list[tuple[int, np.ndarray]] = []
        for i in range(n):
            k = self._keys[i]
            if k is None:
                continue
            cut = final_rows(k, i, last)
            if cut:
                finals.append((i, k[:cut]))
        if not finals:
            return
        keys = np.concatenate([k for _, k in finals])
        idx = np.concatenate([np.full(len(k), i, np.int64) for i, k in finals])
        take = idx[np.lexsort((idx, keys))[: self._left]]
        for i, _ in finals:
            m = int((take == i).sum())
            if m == 0:
                continue
            raw, keys_i = self._pending[i], self._keys[i]
            assert raw is not None and keys_i is not None
            self._out[i].append(raw.slice(0, m))
            if m == len(raw):
                self._pending[i] = self._keys[i] = None
            else:
                self._pending[i], self._keys[i] = raw.slice(m, len(raw)), keys_i[m:]
            self.released[i] += m
            self._left -= m
        if self._infos is not None:
            for i, info in enumerate(self._infos):
                info.packets = self.released[i]
        if self._left <= 0:
            self._done = True
            self._close()
