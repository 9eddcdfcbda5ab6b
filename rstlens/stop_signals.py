"""SIGINT and SIGTERM during a run, tcpdump's way, and never at a bad moment.

* The first signal asks the run to stop reading: the inputs end after the batch being
  read, what was read is analysed and written, and the run reports it (exit 130 / 143).
  The handler raises nothing in the middle of the analysis; it raises KeyboardInterrupt
  only when the run sits in a blocking read (a pipe, stdin), which the stream reader
  turns into the end of that input.
* A second signal before the results are committed abandons them: `Abandoned` unwinds
  the run, its temporary files are removed and the output directory keeps the earlier
  run's files, whole.  Same exit status.
* During the commit itself both signals are blocked (`rstlens.output.commit`) and come
  after it: the handler then only records them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

READING, FINISHING, DONE = "reading", "finishing", "done"


class Abandoned(BaseException):
    """A second stop signal: the run gives up its output (the earlier output stays)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by a second signal {signum}")
        self.signum = signum


def _in_blocking_read(frame: FrameType | None) -> bool:
    """True when the interrupted code is the stream reader waiting for bytes."""
    depth = 0
    while frame is not None and depth < 40:
        code = frame.f_code
        if code.co_name == "read_avail" and code.co_filename.endswith("_pcapfile.py"):
            return True
        frame = frame.f_back
        depth += 1
    return False


class StopSignals:
    """Installs the handlers for a run (main thread only; elsewhere it does nothing)."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.received: int | None = None  # the first signal
        self.count = 0
        self.phase = READING
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_status(self) -> int:
        return 128 + int(self.received or signal.SIGINT)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
        if self.phase == DONE:
            return
        if self.count >= 2:
            self.phase = DONE  # once: further signals must not cut the clean-up short
            raise Abandoned(signum)
        if self.phase == READING and _in_blocking_read(frame):
            raise KeyboardInterrupt  # ends that input; the pipeline goes on with what was read

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

