"""Coverage-guided fuzzing of the capture readers and decoders (atheris / libFuzzer).

    .venv/bin/python tests/fuzz/fuzz_captures.py CORPUS_DIR [libFuzzer flags]

Each input is a capture file's bytes.  It goes through (1) rstlens' own streaming reader
and the decoder (what pipes, stdin and gzip use), (2) `CaptureReader` on a file (libpcap,
then the stream reader where libpcap gives up) and (3) when it held any TCP packet, the
whole `rstlens.analyze` into a scratch directory.  The property: nothing raises except
`RstlensError` (libFuzzer's -timeout and -rss_limit_mb catch hangs and memory blow-ups).
`tests/parsers/test_fuzz.py` runs this with a fixed time budget and replays saved crashes.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import atheris
except ImportError:  # the replay of saved inputs (test_fuzz.py) needs no atheris
    atheris = None

with atheris.instrument_imports(include=["rstlens"]) if atheris else contextlib.nullcontext():
    import rstlens
    import rstlens.pipeline
    from rstlens.errors import RstlensError
    from rstlens.parsers import CaptureReader, DecodeStats, InputInfo
    from rstlens.parsers._decode import decode_raw
    from rstlens.parsers._pcapfile import StreamReader

# scratch files: in $RSTLENS_FUZZ_SCRATCH (the test's tmp_path), else a temporary
# directory removed at exit
if os.environ.get("RSTLENS_FUZZ_SCRATCH"):
    SCRATCH = Path(os.environ["RSTLENS_FUZZ_SCRATCH"])
    SCRATCH.mkdir(parents=True, exist_ok=True)
else:
    SCRATCH = Path(tempfile.mkdtemp(prefix="rstlens-fuzz-"))
    atexit.register(shutil.rmtree, SCRATCH, True)
CAPTURE = SCRATCH / "input.pcap"


def one_input(data: bytes) -> None:
    stats = DecodeStats()
    info = InputInfo(path="<fuzz>")
    for raw in StreamReader(io.BytesIO(data), info, batch_size=64):
        decode_raw(raw, 0, stats)
    CAPTURE.write_bytes(data)
    reader = CaptureReader([str(CAPTURE)], batch_size=64)
    tcp = sum(len(b) for b in reader)
    if tcp:
        with contextlib.suppress(RstlensError):
            rstlens.analyze(str(CAPTURE), outdir=SCRATCH / "out")


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if atheris is None:
        sys.exit("atheris is not installed (pip install atheris)")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
