"""What a run can be told, with every default defined here once.

The command line (`cli/analyze.py`), the Python API (`api.analyze`) and the flow engine
(`flows/engine.py`) all take their defaults from these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TUNNEL_DEPTH = 2  # tunnel layers decoded: Zeek's Tunnel::max_depth
MAX_TUNNEL_DEPTH = 4  # the decode kernel's side array holds this many (_batch.TUNNEL_MAX_LAYERS)


@dataclass(frozen=True, slots=True)
class CoreOptions:
    """The flow core's timeouts and size; timeouts follow Zeek's defaults (init-bare.zeek)."""

    idle_timeout: float = 300.0  # tcp_inactivity_timeout
    handshake_idle_timeout: float = 60.0  # udp_inactivity_timeout, until a side leaves the handshake
    close_delay: float = 5.0  # tcp_close_delay / tcp_reset_delay
    attempt_timeout: float = 5.0  # tcp_attempt_delay: an unanswered SYN is logged S0
    max_flows: int = 1_000_000  # open connections kept; the longest idle are evicted past it


# Seconds of capture time after a connection's end before its RST verdicts are final, when
# capturing live and no --linger is given (files wait for the end of the input instead).
LIVE_LINGER = 30.0
# RSTs attributed and written at a time at the end (RunOptions.final_chunk)
FINAL_CHUNK = 32_768


@dataclass(frozen=True, slots=True)
class RunOptions:
    """One analysis run: input selection, the core's options and when verdicts are final."""

    bpf: str | None = None
    count: int | None = None
    core: CoreOptions = field(default_factory=CoreOptions)
    # Seconds of capture time after a connection's last packet before its RST verdicts are
    # final and written.  None: at the end of the input (files), or LIVE_LINGER when live.
    # Evidence that arrives later (a host's TTL seen in later connections) is then no longer
    # used, in exchange for bounded memory and output while capturing.
    linger: float | None = None
    # Capture on this interface instead of reading files (stops on Ctrl-C or `count`).
    interface: str | None = None
    # The live sensor (issue 19): rolling dataset output, kept packets, status and metrics.
    sensor: SensorOptions = field(default_factory=lambda: SensorOptions())
    # Tunnel layers decoded around a packet (Zeek's Tunnel::max_depth, 2); deeper packets are
    # dropped and counted (`tunnel_depth_exceeded`).  0 decodes no tunnel.
    tunnel_depth: int = DEFAULT_TUNNEL_DEPTH
    # Cores to use (`-j`): 1 runs every stage in the caller's thread; 2 or more read and
    # decode in a thread of their own ahead of the flow core (`rstlens.parallel.threads`);
    # 0 means every core.  The output is the same whatever the number.
    jobs: int = 1
    # RSTs whose resets rows are built and written at a time once the verdicts are final
    # (`attribution.attribute.attribute_chunks`); the output is the same whatever the size
    # (the tests make it small), only memory and speed change.
    final_chunk: int = FINAL_CHUNK

    def __post_init__(self) -> None:
        if not 0 <= self.tunnel_depth <= MAX_TUNNEL_DEPTH:
            raise ValueError(f"tunnel depth must be 0..{MAX_TUNNEL_DEPTH}, not {self.tunnel_depth}")
        if self.jobs < 0:
            raise ValueError(f"jobs must be >= 0, not {self.jobs}")
        if self.final_chunk < 1:
            raise ValueError(f"final_chunk must be >= 1, not {self.final_chunk}")

    @property
    def effective_linger(self) -> float | None:
        """The linger window in force: the given one, else LIVE_LINGER when live."""
        if self.linger is not None:
            return self.linger
        if self.interface is not None or self.sensor.rotate is not None:
            return LIVE_LINGER  # a rolling dataset finalises verdicts as it goes, like live
        return None


# ---- the live sensor (issue 19) ---------------------------------------------------------
# Seconds between the plain status lines on stderr (when it is not a terminal) while live.
STATS_INTERVAL = 60.0
# How often the rich live view on a terminal is redrawn, seconds.
LIVE_VIEW_REFRESH = 1.0
# Seconds of history behind the "last minute" top RST senders and services.
TOP_WINDOW = 60.0
# Where --metrics PORT listens unless an address is given (ADDR:PORT): loopback only.
METRICS_ADDRESS = "127.0.0.1"
# libpcap's capture buffer (-B, KiB) when none is given: libpcap's own default (2 MiB).
CAPTURE_BUFFER_KIB: int | None = None
# Live: bytes kept of each packet (libpcap's snap length, as tcpdump -s; its maximum).
SNAPLEN = 262144


@dataclass(frozen=True, slots=True)
class SensorOptions:
    """A long-running capture: rotated dataset output, packets kept, status and metrics."""

    # Seconds per part of the hive-partitioned dataset (None: the two single files).
    rotate: float | None = None
    # Also start a new part once the current one holds this many rows (flows + resets).
    rotate_rows: int | None = None
    # Write the captured packets (live only) to this pcap file name, rotated like tcpdump.
    write_file: str | None = None
    write_rotate: float | None = None  # -G seconds (default: --rotate)
    write_size: int | None = None  # -C bytes per packet file
    write_count: int | None = None  # -W: keep at most this many packet files
    write_bytes: int | None = None  # --write-max-bytes: keep at most this many bytes of them
    stats_interval: float = STATS_INTERVAL
    metrics: str | None = None  # PORT or ADDR:PORT
    buffer_kib: int | None = CAPTURE_BUFFER_KIB
    snaplen: int = SNAPLEN  # -s: bytes kept of each packet (live)
    write_format: str | None = None  # -w's format: "pcap" or "pcapng" (None: by the name)


DEFAULT_CORE = CoreOptions()
