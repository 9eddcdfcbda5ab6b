"""Pipeline stages on threads of their own: `ReadAhead` runs an iterator in a thread that
stays up to `depth` items ahead of its consumer.  At `-j 2` and more each input's raw
records come from libpcap in a thread of their own (`raw_read_ahead`, up to
`MAX_READER_THREADS` inputs) and are decoded in the flow core's thread; a larger set of
inputs is read, decoded and merged into one timeline in one `ReadAhead` thread instead.
`Stage` makes the records of finished connections and writes them beside the flow core.

The compiled kernels release the GIL while they run (`rstlens.kernels.aot`, numba's
``nogil``), and so does libpcap's `next_batch`, so libpcap reads batch k + 1 while the
flow core walks batch k.  The consumer sees exactly the items, in exactly the order, that
iterating the source directly gives: `-j 2` output equals `-j 1` row for row.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEPTH = 8  # batches read ahead: ~8 x 2,048 packets, a few MB


class _End:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead(Generic[T]):
    """Iterate `source` in a thread of its own, at most `depth` items ahead.

    An exception raised by the source is raised again in the consumer, at the item where it
    happened.  Closing the iteration early (a `break`, an exception, KeyboardInterrupt in
    the consumer) stops the thread after the item it is producing and closes the source."""

    def __init__(self, source: Iterable[T], depth: int = DEPTH, name: str = "rstlens-reader") -> None:
        self._source = source
        self._queue: queue.Queue[T | _End | _Failed] = queue.Queue(max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._started = False

    def _put(self, item: T | _End | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_End())
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        if self._started:
            raise RuntimeError("a ReadAhead can be iterated only once")
        self._started = True
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the thread (after the item in hand) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room, in case it waits to put an item
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)


# Inputs read by a thread each (libpcap ahead of the decoder) at most; a larger set (a
# rotated capture of many files, all open at once for the timeline merge) is read in the
# decoder's thread, which keeps memory at about one batch per input.
MAX_READER_THREADS = 4


def raw_read_ahead(inputs: int, jobs: int) -> Callable[[Iterator[R]], Iterator[R]] | None:
    """For `CaptureReader.read_ahead` (set once its directories are expanded: `inputs` are
    files): each input's raw records read by libpcap in a thread of its own, a couple of
    batches ahead of the decoder (-j 2 and more); None for more than `MAX_READER_THREADS`."""
    if jobs < 2 or inputs > MAX_READER_THREADS:
        return None
    depth = max(2, DEPTH // max(1, inputs))

    def wrap(raws: Iterator[R]) -> Iterator[R]:
        return iter(ReadAhead(raws, depth, name="rstlens-libpcap"))

    return wrap


# calls waiting for the records stage: each holds a copy of a drain's rows (~4.5 MB for
# 4,096 connections), and at the end of a flood the flow core emits the held connections
# faster than their records are made, so a deeper queue only held more copies: 4 against 1
# was the 1 M SYN flood's -j 2 peak 293-300 -> 283-288 MB, the scan's 275-282 -> 265-277 MB,
# wall time paired 0.99-1.00 on the flood, the scan and the 5 M file
RECORDS_DEPTH = 1


class Stage:
    """Calls run in a thread of their own, one at a time, in the order submitted (at most
    `depth` waiting): the records stage of `-j 2` (finished connections -> Arrow records ->
    Parquet) beside the flow core, which keeps walking packets meanwhile.

    `sync()` waits until every call submitted so far is done; an exception raised by a call
    is raised again in the caller's thread at the next `submit` or `sync` (later calls are
    then skipped)."""

    def __init__(self, name: str = "rstlens-records", depth: int = RECORDS_DEPTH) -> None:
        self._queue: queue.Queue[tuple[Callable[..., object], tuple[object, ...]] | None] = queue.Queue(max(1, depth))
        self._error: list[BaseException] = []
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if not self._error and not self._cancelled.is_set():
                    fn, args = item
                    fn(*args)
            except BaseException as exc:  # raised again in the caller (`_raise`)
                self._error.append(exc)
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error:
            raise self._error[0]

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        self._raise()
        self._queue.put((fn, args))

    def sync(self) -> None:
        self._queue.join()
        self._raise()

    def close(self, cancel: bool = False) -> None:
        """End the thread after the calls submitted (`cancel`: after the one running)."""
        if cancel:
            self._cancelled.set()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
