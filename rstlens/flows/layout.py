"""Column layouts of the flow core's state matrices.

The flow table keeps one int64 row per open connection (`F`), the RST log one int64 row
per RST packet (`R`; `nr` holds [rows used, RSTs logged in the run]).  Column indices are
module constants so the numba kernels see them as compile-time integers.  Per-direction
blocks: column ``D + d * DSTRIDE + X`` where ``d`` is 0 for the originator and 1 for the
responder.
"""

from __future__ import annotations

# --- Zeek endpoint states (TCP_Endpoint.h) -------------------------------------------------
INACTIVE = 0
SYN_SENT = 1
SYN_ACK_SENT = 2
PARTIAL = 3
ESTABLISHED = 4
CLOSED = 5
RESET = 6

# --- why a connection ended -----------------------------------------------------------------
END_FIN = 0
END_RST = 1
END_IDLE = 2
END_EVICTED = 3
END_EOF = 4

# --- columns of F: hot first --------------------------------------------------------------
# A row is far from the cache when its packet arrives, so what an ordinary segment reads
# and writes comes first (flow columns, then both directions' hot blocks: HOT_COLS columns,
# the lines `prefetch_row` fetches); what only SYNs, RSTs, rare history letters and the
# emission use comes after.
ACTIVE = 0
HASH = 1
KEY_PORTS = 2  # (port of canonical endpoint A) << KEY_PORT_SHIFT | port of B
KEY_EXTRA = 3  # vlan + 1, inner vlan + 1 and interface, 16 bits each (see core._key_extra)
ORIG_IS_A = 4  # 1 when the originator is canonical endpoint A
HLEN = 5  # history letters used in H
HSEEN = 6  # once-only history bits (Zeek's hist_seen), responder bits << 16
ATTEMPT_DL = 7  # Zeek's AttemptTimer: removal time of an unanswered attempt (0: none)
TS_LAST = 8  # Zeek's last_time: frozen once both sides closed
CLOSE_DL = 9  # removal time after a complete close or reset (0: none)
LONG_TIMEOUT = 10  # an endpoint left the handshake states: tcp_inactivity_timeout applies
PKT_LAST = 11  # time of the newest packet, even after the close
SERIAL = 12  # run-wide connection number: joins RST rows to their flow
LAST_RST = 13  # index in R of this connection's newest RST, -1 when none
TUNNEL = 14  # tunnel identity (PacketBatch.tunnel), 0 untunnelled: part of the key
D = 15

# how KEY_PORTS and KEY_EXTRA pack their fields
KEY_PORT_SHIFT = 16
KEY_FIELD_MASK = 0xFFFF
KEY_VLAN_SHIFT = 48
KEY_INNER_VLAN_SHIFT = 32

# --- per-direction fields (Zeek's TCP_Endpoint plus what attribution needs) ------------------
# Side d's field X is column ``D + d * DSTRIDE + X``.  Hot fields are X < DSTRIDE (the two
# sides' hot blocks follow each other); cold fields are X >= COLD = 2 * DSTRIDE, so that
# side 0's cold block lies past both hot blocks and side 1's lies DSTRIDE further on.
ST = 0  # Zeek endpoint state
PREV_ST = 1
PKTS = 2
START = 3  # Zeek's start_seq, unwrapped (raw + 2**32 * wraps)
LAST = 4  # Zeek's last_seq, unwrapped
ACKD = 5  # Zeek's ack_seq: highest valid ack the peer sent for this side's data, unwrapped
CONTIG = 6  # reassembly: relative seq up to which data arrived without a hole
ABOVE_S = 7  # one block of data seen above a hole (relative seq), 0 when none
ABOVE_E = 8
FIN_CNT = 9
FIN_SEQ = 10
DID_CLOSE = 11
NXT_SET = 12  # rstlens' own view: highest seq + length sent (raw, 32-bit, compared by delta)
NXT32 = 13
MYACK_SET = 14  # highest ack this side sent (raw, in the peer's sequence space)
MYACK32 = 15
WIN = 16  # last raw window
TTL_MIN = 17
TTL_MAX = 18
NONRST_PKTS = 19
LAST_TS = 20  # the last segment from this side (not a capture copy): the "trigger" of a reply RST
LAST_SIG = 21  # ... its seq << 32 | (IP ID & 0xFFFF) << 16 | (payload length & 0xFFFF)
LAST_SEG = 22  # ... its TTL << 48 | flags << 32 | ack (raw): see `core._last_segment`
SEG_TTL_SHIFT = 48  # of the TTL in LAST_SEG
SEG_FLAGS_SHIFT = 32  # of the flags in LAST_SEG
LAST_DATA_TS = 23  # time of the last segment with payload
DSTRIDE = 24
COLD = 2 * DSTRIDE
HIST_LAST_SYN = COLD + 0
HIST_LAST_FIN = COLD + 1
HIST_LAST_RST = COLD + 2
RXMT_CNT = COLD + 3
RXMT_THRESH = COLD + 4
ZWIN_CNT = COLD + 5
ZWIN_THRESH = COLD + 6
GAP_CNT = COLD + 7
GAP_THRESH = COLD + 8
WSCALE = COLD + 9  # from the SYN, -1 when absent
MSS = COLD + 10
TS_OPT = COLD + 11  # TCP timestamp option seen on this side's SYN
DUPS = COLD + 12  # capture copies of this side's segments (see `core._is_copy`)
CSUM_GOOD = COLD + 13  # this side's non-RST segments whose checksums were verified: good
CSUM_BAD = COLD + 14  # ... wrong (not an offload signature)
CSUM_OFFLOAD = COLD + 15  # ... holding an offload signature (pseudo-header sum or zero)
# who speaks for this side (issue 17 item 8): the TTL of its SYN / SYN-ACK (0: none seen), and
# the TTL range of its payload segments (DATA_TTL_MIN > DATA_TTL_MAX: none seen)
HS_TTL = COLD + 16
DATA_TTL_MIN = COLD + 17
DATA_TTL_MAX = COLD + 18
# TCP timestamps (RFC 7323) of this side's non-RST segments (capture copies excluded): what a
# RST's TSecr is judged against (`rstlog.ts_seen`)
TSV_N = COLD + 19  # segments that carried the timestamp option
TSV_MAX = COLD + 20  # the highest TSval sent (raw 32-bit, compared modulo 2**32)
TSV_FIRST = COLD + 21  # the first TSval sent, with the TSV_* bits below
NCOLD = 22
# every per-direction field, for code that moves a whole side (role flips)
DIR_FIELDS = tuple(range(DSTRIDE)) + tuple(range(COLD, COLD + NCOLD))

HOT_COLS = D + 2 * DSTRIDE
# The cold fields every segment of a side updates (`core._sender_view`: the payload TTL range;
# `rstlog.ts_seen`: the TSvals), by side: the first column of the one cache line holding them,
# which the flow core prefetches with the hot lines (`hashtable.prefetch_row`).  Untouched, they
# had cost a cache miss per packet.
_SEGMENT_COLD = (DATA_TTL_MIN, DATA_TTL_MAX, TSV_N, TSV_MAX, TSV_FIRST)
COLD_SEGMENT_LINE_0, COLD_SEGMENT_LINE_1 = (
    (D + d * DSTRIDE + min(_SEGMENT_COLD)) // 8 * 8 for d in (0, 1)
)
assert all((D + d * DSTRIDE + c) // 8 * 8 == line
           for d, line in ((0, COLD_SEGMENT_LINE_0), (1, COLD_SEGMENT_LINE_1))
           for c in _SEGMENT_COLD), "each side's per-segment cold fields in one line"  # fmt: skip

# --- cold flow-level columns: after side 1's cold block -----------------------------------
IPV = D + DSTRIDE + COLD + NCOLD
TS_FIRST = IPV + 1
START_SEEN = IPV + 2
RST_COUNT = IPV + 3
SOURCE = IPV + 4
VLAN = IPV + 5
INNER_VLAN = IPV + 6
END_REASON = IPV + 7  # set when the connection is emitted
CONN_STATE = IPV + 8  # set when the connection is emitted (index into CONN_STATES)
ORIG_SIZE = IPV + 9  # set when the connection is emitted: Zeek's Size() per side
RESP_SIZE = IPV + 10

NF = -(-(RESP_SIZE + 1) // 8) * 8  # rounded up to whole 64-byte lines

HMAX = 48  # history letters kept per connection

# --- the key rows (K): one 64-byte line per row, all a lookup reads ------------------------
# The canonical key (two 128-bit addresses) and the words `hashtable.lookup` compares, so a
# lookup never reads F: an embryonic connection (below) has no F row in use at all.
K_A_HI = 0
K_A_LO = 1
K_B_HI = 2
K_B_LO = 3
K_HASH = 4  # = F[HASH] of a full row
K_PORTS = 5  # = F[KEY_PORTS]
K_EXTRA = 6  # = F[KEY_EXTRA]
K_TUNNEL = 7  # = F[TUNNEL]
NK = 8
NKO = 4  # the output keys (KO): the addresses only

# --- what a row holds (A, one byte per row) --------------------------------------------------
ROW_FREE = 0
ROW_FULL = 1  # the connection's state is its F (and H) row
# Embryonic: a plain SYN (no ACK/RST/FIN, no payload) and nothing else seen.  Its state is
# the SYN itself, packed into one 64-byte row of E; F and H are not touched.  Its next
# packet (or its emission) replays the SYN into a full row first (`core._materialize`), so
# every output is what the full row would have given.  A SYN flood's connections thus
# cost K + E + DL + T + free (~170 bytes), not the ~1,000 of a full row.
ROW_EMBRYONIC = 2
# Reset in its close delay: a plain SYN, then an RST without SYN, FIN or payload (either
# side: a closed port's RST+ACK, the originator giving up), and nothing else.  Its state is
# the SYN in E and the RST packed into one 64-byte row of X; the RST is logged when the
# connection is replayed (`core._replay`): into R when a third packet makes it a full row,
# into the output's RST rows (RO) when it is emitted, with the ordinal it took on arrival,
# so it is counted and logged once, in its place.  A SYN scan's connections thus cost K + E
# + X + DL + T + free (~250 bytes) through Zeek's 5 s close delay, not a full row and an
# R row (~1,500).
ROW_RESET = 3

# --- the embryonic rows (E): the SYN, packed ------------------------------------------------
E_TS = 0
E_FRAME = 1
E_SERIAL = 2
E_SEQ_ACK = 3  # seq | ack << 32 (raw 32-bit each)
E_PACKET = 4  # flags | window << 16 | ttl << 32 | (outer_ttl + 1) << 40 | df << 50 | ip_version << 51
E_OPTIONS = 5  # (ip_id + 1) | mss << 33 | (wscale + 1) << 49
E_ORIGIN = 6  # source | tcp_opts << 16 | src_is_a << 24 | (checksum status + 1) << 25 | TSval << 28
E_VLANS = 7  # (vlan + 1) | (inner_vlan + 1) << 32, 32 bits each
NE = 8

# --- the reset rows (X): the RST of a ROW_RESET connection, packed --------------------------
X_TS = 0
X_FRAME = 1
X_ORDINAL = 2  # its R_ORDINAL, taken on arrival
X_SEQ_ACK = 3  # seq | ack << 32 (raw 32-bit each)
X_PACKET = 4  # flags | window << 16 | ttl << 32 | (outer_ttl + 1) << 40 | df << 50 | side << 51
X_ORIGIN = 5  # (ip_id + 1) | tcp_opts << 33 | (checksum status + 1) << 41 | source << 44
X_TSP = 6  # TSval << 32 | TSecr (0 without the timestamp option)
NX = 8

# --- RST log columns (R) --------------------------------------------------------------------
R_SERIAL = 0
R_TS = 1
R_FRAME = 2
R_SOURCE = 3
R_FLAGS = 4
R_SEQ = 5  # raw
R_ACK = 6  # raw
R_TTL = 7
R_IPID = 8
R_DF = 9
R_WIN = 10
R_PLEN = 11
R_OPTS = 12
# state of the sender and of the receiver just before the RST
R_SND_ST = 13
R_RCV_ST = 14
R_SND_PKTS = 15  # non-RST packets the sender had sent in this connection
R_SND_TTL_MIN = 16
R_SND_TTL_MAX = 17
R_SND_FIN = 18  # the sender had sent a FIN
R_RCV_FIN = 19
R_SEQ_VS_SND_NXT = 20  # unwrapped RST seq minus the sender's next sequence number
R_SEQ_VS_RCV_ACK = 21  # unwrapped RST seq minus the highest ack the receiver sent
R_RCV_ACK_SET = 22
R_RCV_WIN_BYTES = 23  # receiver's advertised window in bytes (scaled), -1 unknown
R_ACK_VS_RCV_NXT = 24  # RST ack minus the receiver's next sequence number (when ACK set)
R_SND_SEQ_SET = 25
R_TRIG_FLAGS = 26  # the receiver's last segment before the RST (-1: none)
R_TRIG_TS = 27
R_TRIG_ACK = 28
R_SND_UNACKED = 29  # bytes the sender had sent that the receiver had not acknowledged
R_RCV_UNACKED = 30
# after the RST (filled while the connection lives on)
R_AFTER_SND_ADV = 31  # ... of which carried data/FIN/SYN-ACK at or beyond the RST's seq
R_AFTER_RCV_PKTS = 32  # packets from the receiver afterwards
R_PREV_IN_FLOW = 33  # index of the previous RST of the same connection, -1
R_AFTER_SND_SYNACK = 34  # the claimed sender sent a SYN-ACK afterwards
R_SRC_IS_A = 35  # the RST came from canonical endpoint A (direction survives role flips)
R_SND_LAST_DATA_TS = 36  # time of the sender's last payload segment (0: none)
R_RCV_LAST_DATA_TS = 37  # time of the receiver's last payload segment (0: none)
R_AFTER_RCV_NONRST = 38  # non-RST packets from the receiver afterwards
R_AFTER_RCV_CHALLENGE = 39  # the receiver's first packet afterwards was a pure ACK (RFC 5961)
R_IPV = 40
R_ORDINAL = 41  # the RST's number in the run (arrival order survives taking rows out of R)
R_OUTER_TTL = 42  # TTL of the innermost tunnel's outer IP header, -1 untunnelled
R_DUP_OF = 43  # a capture copy: R_ORDINAL of the RST it copies (-1: not a copy)
R_CSUM = 44  # checksum status of the RST (CK_* below)
R_SND_CSUM_GOOD = 45  # the sender's verified non-RST segments in this connection: good
R_SND_CSUM_BAD = 46  # ... bad
# the IPv4 IP ID of the last non-RST segment each side had sent before the RST (-1: none,
# IPv6 or IP ID 0), its own stack's counter (`rstlog._stack_ipid`): a later segment whose IP
# ID is not newer was sent before the RST (`rstlog.after_rst`)
R_SND_LAST_IPID = 47
R_RCV_LAST_IPID = 48
# the sender's handshake TTL and payload TTL range before the RST (HS_TTL, DATA_TTL_*):
# two speakers for one address (`attribution.speakers`)
R_SND_HS_TTL = 49
R_SND_DATA_TTL_MIN = 50
R_SND_DATA_TTL_MAX = 51
R_TEXT_LEN = 52  # payload bytes kept in R_TEXT (at most TEXT_BYTES)
R_TEXT = 53  # TEXT_BYTES of payload, 8 per column, first byte lowest
TEXT_BYTES = 64
# the sender's last segment before the RST (its side's LAST_SIG / LAST_SEG / LAST_TS; 0 when
# it sent none): the RST's seq minus that segment's seq, its payload length, its flags and
# time — a keepalive probe (SND.NXT - 1, 0 or 1 byte) or a retransmission the RST follows
# when a stack gives up (`attribution.signals`, abort.keepalive_timeout/retransmit_timeout)
R_SND_LAST_SEQ_DELTA = R_TEXT + TEXT_BYTES // 8
R_SND_LAST_LEN = R_SND_LAST_SEQ_DELTA + 1
R_SND_LAST_FLAGS = R_SND_LAST_SEQ_DELTA + 2  # -1: the sender sent nothing before
R_SND_LAST_TS = R_SND_LAST_SEQ_DELTA + 3
# TCP timestamps (issue 17 item 6): the RST's own option, and the receiver's TSvals before it
# (what a TSecr should echo: RFC 7323 §4.3); from layout's per-side TSV_* fields
R_TSVAL = R_SND_LAST_TS + 1  # the RST's TSval (raw; 0 without the option: R_OPTS says)
R_TSECR = R_TSVAL + 1  # the RST's TSecr (raw; 0 without the option)
R_RCV_TSV_N = R_TSVAL + 2  # the receiver's segments that carried the timestamp option
R_RCV_TSV_MAX = R_TSVAL + 3  # the highest TSval the receiver had sent
R_RCV_TSV_FIRST = R_TSVAL + 4  # its first TSval, with the TSV_* bits
NR = R_RCV_TSV_FIRST + 1

# TSV_FIRST / R_RCV_TSV_FIRST: the first TSval in the low 32 bits, and
TSV_ON_SYN = 1 << 32  # ... it was on the side's SYN (its clock's start in this connection is known)
TSV_SYN_WITHOUT = 1 << 33  # the side sent a SYN without the option (none negotiated)

# checksum status (R_CSUM, `core._checksum`)
CK_UNVERIFIED = 0  # the segment was not captured whole
CK_GOOD = 1
CK_BAD = 2  # the IPv4 header or TCP checksum is wrong
CK_OFFLOAD = 3  # the TCP checksum field holds the pseudo-header sum (or 0): offload

# --- kernel parameters (P) and counters (C) -------------------------------------------------
P_IDLE_US = 0
P_CLOSE_DELAY_US = 1
P_SWEEP_US = 2
P_LAST_SWEEP = 3
P_NEXT_SERIAL = 4
P_MAX_TS = 5  # newest timestamp seen
P_LIVE = 6  # open connections in the table
P_SHORT_IDLE_US = 7  # inactivity timeout while both sides are still in the handshake
P_ATTEMPT_US = 8  # an unanswered attempt is removed after this long (Zeek's tcp_attempt_delay)
# Rows [0, this) have held a connection.  Free rows are reused lowest first, so this is the
# most connections ever open at once: scans for due or open rows stop here, not at the
# table's capacity (a sweep every second of capture time read all 65,536 deadlines).
P_ROWS_USED = 9
P_RESET_ROWS = 10  # 1: SYN + RST connections wait out the close delay as reset rows (ROW_RESET)
# A sweep stopped by a full output resumes after the drain at the row it stopped at, for
# the same time (`core.sweep`): a flood's sweeps had re-read a million deadlines per drain
P_SWEEP_FROM = 11
P_SWEEP_AT = 12  # the time of the sweep that stopped
P_EMIT_FROM = 13  # where `core.emit_all` goes on at its next call (the rows before are free)
NP = 14

C_FLOWS = 0
C_IDLE = 1
C_EVICTED = 2
C_REUSE = 3
C_RSTS = 4
C_TIME_BACKWARDS = 5
C_DUPS = 6  # capture copies (any side, any connection)
NC = 8

# kernel return status
OK = 0
NEED_SLOT = 1
NEED_OUTPUT = 2
NEED_RST_SPACE = 3
