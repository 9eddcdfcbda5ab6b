"""LINKTYPE_* values rstlens decodes, and their names for messages."""

from __future__ import annotations

NULL = 0  # BSD loopback, 4-byte address family in the capturing host's byte order
ETHERNET = 1
PPP = 9  # PPP (RFC 1661); 0xFF03 address/control when in HDLC-like framing (RFC 1662)
RAW_BSD12 = 12  # DLT_RAW on most BSDs / libpcap's DLT for LINKTYPE_RAW on Linux
RAW_BSD14 = 14  # DLT_RAW on OpenBSD
PPP_HDLC = 50  # PPP in HDLC-like framing (0xFF03), or Cisco HDLC (0x0F/0x8F): not stuffed
RAW = 101
C_HDLC = 104  # Cisco HDLC: address, control, a 2-byte EtherType
LOOP = 108  # OpenBSD loopback, 4-byte address family in network byte order
LINUX_SLL = 113
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

SUPPORTED: frozenset[int] = frozenset(
    {NULL, ETHERNET, PPP, RAW_BSD12, RAW_BSD14, PPP_HDLC, RAW, C_HDLC, LOOP, LINUX_SLL, IPV4, IPV6,
     LINUX_SLL2}
)

NAMES: dict[int, str] = {
    NULL: "null",
    ETHERNET: "ethernet",
    RAW_BSD12: "raw",
    RAW_BSD14: "raw",
    RAW: "raw",
    LOOP: "loop",
    LINUX_SLL: "linux-sll",
    IPV4: "ipv4",
    IPV6: "ipv6",
    LINUX_SLL2: "linux-sll2",
    PPP: "ppp",
    PPP_HDLC: "ppp-hdlc",
    C_HDLC: "c-hdlc",
    105: "ieee802.11",
    127: "radiotap",
    239: "nflog",
}

# The pcap header's link-type word carries FCS length / flag bits above bit 16.
LINKTYPE_MASK = 0xFFFF


def name(linktype: int) -> str:
    """`ethernet(1)`-style label for messages."""
    return f"{NAMES.get(linktype, 'unknown')}({linktype})"


def dlt_for_bpf(linktype: int) -> int:
    """libpcap's DLT for a LINKTYPE (only where they differ on Linux), for `pcapy.compile`."""
    return {RAW: RAW_BSD12, RAW_BSD14: RAW_BSD12}.get(linktype, linktype)
