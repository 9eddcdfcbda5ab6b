"""Column layouts of the flow core's state matrices.

The flow table keeps one int64 row per open connection (`F`), the RST log one int64 row
per RST packet (`R`).  Column indices are module constants so the numba kernels see them
as compile-time integers.  Per-direction blocks: column ``D + d * DSTRIDE + X`` where
``d`` is 0 for the originator and 1 for the responder.
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

# --- flow-level columns of F ----------------------------------------------------------------
ACTIVE = 0
SERIAL = 1  # run-wide connection number: joins RST rows to their flow
HASH = 2
KEY_PORTS = 3  # (port of canonical endpoint A) << 16 | port of B
KEY_EXTRA = 4  # vlan, inner vlan and interface packed (see _flowcore._key_extra)
IPV = 5
ORIG_IS_A = 6  # 1 when the originator is canonical endpoint A
TS_FIRST = 7
TS_LAST = 8  # Zeek's last_time: frozen once both sides closed
FLIPPED = 9
START_SEEN = 10
HLEN = 11  # history letters used in H
HSEEN = 12  # once-only history bits (Zeek's hist_seen), responder bits << 16
RST_COUNT = 13
LAST_RST = 14  # index in R of this connection's newest RST, -1 when none
SOURCE = 15
IFACE = 16
VLAN = 17
INNER_VLAN = 18
END_REASON = 19  # set when the connection is emitted
CONN_STATE = 20  # set when the connection is emitted (index into CONN_STATES)
ATTEMPT_DL = 21  # Zeek's AttemptTimer: removal time of an unanswered attempt (0: none)
CLOSE_DL = 22  # removal time after a complete close or reset (0: none)
LONG_TIMEOUT = 23  # an endpoint left the handshake states: tcp_inactivity_timeout applies
PKT_LAST = 24  # time of the newest packet, even after the close
ORIG_SIZE = 25  # set when the connection is emitted: Zeek's Size() per side
RESP_SIZE = 26
D = 28

# --- per-direction block (Zeek's TCP_Endpoint plus what attribution needs) -------------------
ST = 0  # Zeek endpoint state
PREV_ST = 1
PKTS = 2
START = 3  # Zeek's start_seq, unwrapped (raw + 2**32 * wraps)
LAST = 4  # Zeek's last_seq, unwrapped
ACKD = 5  # Zeek's ack_seq: highest valid ack the peer sent for this side's data, unwrapped
HIST_LAST_SYN = 6
HIST_LAST_FIN = 7
HIST_LAST_RST = 8
FIN_CNT = 9
RST_CNT = 10
FIN_SEQ = 11
DID_CLOSE = 12
RXMT_CNT = 13
RXMT_THRESH = 14
ZWIN_CNT = 15
ZWIN_THRESH = 16
GAP_CNT = 17
GAP_THRESH = 18
CONTIG = 19  # reassembly: relative seq up to which data arrived without a hole
ABOVE_S = 20  # one block of data seen above a hole (relative seq), 0 when none
ABOVE_E = 21
NXT_SET = 22  # rstlens' own view: highest seq + length sent (raw, 32-bit, compared by delta)
NXT32 = 23
MYACK_SET = 24  # highest ack this side sent (raw, in the peer's sequence space)
MYACK32 = 25
WIN = 26  # last raw window
WSCALE = 27  # from the SYN, -1 when absent
MSS = 28
TS_OPT = 29  # TCP timestamp option seen on this side's SYN
TSVAL_LAST = 30
TTL_MIN = 31
TTL_MAX = 32
TTL_LAST = 33  # of the last non-RST packet
IPID_LAST = 34  # of the last non-RST packet
NONRST_PKTS = 35
PAYLOAD = 36  # payload bytes sent, retransmissions included
SYN_TS = 37
FIN_TS = 38
RST_TS = 39
LAST_TS = 40  # the last segment from this side: the "trigger" of a reply RST
LAST_FLAGS = 41
LAST_SEQ32 = 42
LAST_ACK32 = 43
LAST_LEN = 44
LAST_DATA_TS = 45  # time of the last segment with payload
DSTRIDE = 46

NF = D + 2 * DSTRIDE

HMAX = 48  # history letters kept per connection

# --- RST log columns (R) --------------------------------------------------------------------
R_SERIAL = 0
R_TS = 1
R_FRAME = 2
R_SOURCE = 3
R_DIR = 4  # 0: sent by the originator, 1: by the responder
R_FLAGS = 5
R_SEQ = 6  # raw
R_ACK = 7  # raw
R_TTL = 8
R_IPID = 9
R_DF = 10
R_WIN = 11
R_PLEN = 12
R_OPTS = 13
R_TSVAL = 14
R_NTH = 15  # 1 for the connection's first RST
# state of the sender and of the receiver just before the RST
R_SND_ST = 16
R_RCV_ST = 17
R_SND_PKTS = 18  # non-RST packets the sender had sent in this connection
R_SND_TTL_MIN = 19
R_SND_TTL_MAX = 20
R_SND_TTL_LAST = 21
R_SND_IPID_LAST = 22
R_SND_TS_OPT = 23  # the sender negotiated timestamps
R_SND_TSVAL_LAST = 24
R_SND_FIN = 25  # the sender had sent a FIN
R_RCV_FIN = 26
R_SEQ_VS_SND_NXT = 27  # unwrapped RST seq minus the sender's next sequence number
R_SEQ_VS_RCV_ACK = 28  # unwrapped RST seq minus the highest ack the receiver sent
R_RCV_ACK_SET = 29
R_RCV_WIN_BYTES = 30  # receiver's advertised window in bytes (scaled), -1 unknown
R_ACK_VS_RCV_NXT = 31  # RST ack minus the receiver's next sequence number (when ACK set)
R_SND_SEQ_SET = 32
R_TRIG_FLAGS = 33  # the receiver's last segment before the RST (-1: none)
R_TRIG_TS = 34
R_TRIG_SEQ = 35
R_TRIG_ACK = 36
R_TRIG_LEN = 37
R_SND_LAST_TS = 38  # time of the sender's last packet before the RST (-1: none)
R_SND_UNACKED = 39  # bytes the sender had sent that the receiver had not acknowledged
R_RCV_UNACKED = 40
R_ESTABLISHED = 41  # the connection had completed a handshake
R_START_SEEN = 42
# after the RST (filled while the connection lives on)
R_AFTER_SND_PKTS = 43  # non-RST packets from the claimed sender afterwards
R_AFTER_SND_ADV = 44  # ... of which carried data/FIN/SYN-ACK at or beyond the RST's seq
R_AFTER_SND_TTL = 45  # TTL of the first such packet
R_AFTER_SND_TS = 46
R_AFTER_RCV_PKTS = 47  # packets from the receiver afterwards
R_AFTER_RCV_FIRST_FLAGS = 48
R_AFTER_RCV_FIRST_TS = 49
R_AFTER_RCV_FIRST_LEN = 50
R_AFTER_RCV_FIRST_ACK = 51
R_PREV_IN_FLOW = 52  # index of the previous RST of the same connection, -1
R_AFTER_SND_SYNACK = 53  # the claimed sender sent a SYN-ACK afterwards
R_AFTER_RCV_RST = 54  # the receiver answered with a RST of its own
R_SRC_IS_A = 55  # the RST came from canonical endpoint A (direction survives role flips)
R_SND_LAST_DATA_TS = 56  # time of the sender's last payload segment (0: none)
R_RCV_LAST_DATA_TS = 57  # time of the receiver's last payload segment (0: none)
R_AFTER_RCV_NONRST = 58  # non-RST packets from the receiver afterwards
R_AFTER_RCV_CHALLENGE = 59  # the receiver's first packet afterwards was a pure ACK (RFC 5961)
R_IPV = 60
NR = 64

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
NP = 10

C_FLOWS = 0
C_IDLE = 1
C_EVICTED = 2
C_REUSE = 3
C_RSTS = 4
C_TIME_BACKWARDS = 5
NC = 8

# kernel return status
OK = 0
NEED_SLOT = 1
NEED_OUTPUT = 2
NEED_RST_SPACE = 3
