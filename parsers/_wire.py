"""Protocol numbers and header sizes the decode kernel reads on the wire (no numba here: the
kernel sees these module constants as compile-time integers).  Link types: `_linktypes`."""

from __future__ import annotations

# --- EtherTypes (IEEE 802 numbers) ---------------------------------------------------------
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100  # 802.1Q
ETHERTYPE_QINQ = 0x88A8  # 802.1ad service tag
ETHERTYPE_QINQ_OLD = 0x9100  # pre-standard QinQ
ETHERTYPE_MPLS_UNICAST = 0x8847
ETHERTYPE_MPLS_MULTICAST = 0x8848
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_FABRICPATH = 0x8903  # Cisco FabricPath
BY_VERSION_NIBBLE = -1  # no EtherType: the network header's first nibble says IPv4 or IPv6

ETHERNET_HLEN = 14  # two MACs + EtherType
ETHERTYPE_OFFSET = 12
FABRICPATH_HLEN = 16  # outer MACs + 0x8903 + FTag/TTL, before the inner Ethernet frame
SLL_HLEN = 16  # Linux cooked capture v1; protocol at 14
SLL_PROTOCOL_OFFSET = 14
SLL2_HLEN = 20  # Linux cooked capture v2; protocol at 0
NULL_HLEN = 4  # BSD loopback address family word
VLAN_TAG_LEN = 4  # TCI (PCP, DEI, 12-bit VID) + the next EtherType
VLAN_VID_MASK = 0x0FFF
MPLS_LABEL_LEN = 4
MPLS_BOTTOM_OF_STACK = 0x01  # in the label entry's third byte
PPPOE_HLEN = 6  # version/type, code, session id, length
SLL_HATYPE_OFFSET = 2  # the ARPHRD_ type of the capturing device, SLL v1
SLL2_HATYPE_OFFSET = 8  # and SLL v2
# ARPHRD_ types whose cooked-capture protocol field is a GRE protocol type (LINKTYPE_LINUX_SLL):
# 0x6558 there means an Ethernet frame follows.  Every other tunnel device's (ARPHRD_TUNNEL
# 768, TUNNEL6 769, SIT 776, PPP 512, NONE 0xFFFE: tun, wireguard) is an EtherType already.
ARPHRD_IPGRE = 778
ARPHRD_IP6GRE = 823
CHDLC_HLEN = 4  # Cisco HDLC: address (0x0F unicast, 0x8F broadcast), control (0), protocol
CHDLC_UNICAST = 0x0F
CHDLC_BROADCAST = 0x8F
PPP_ADDRESS = 0xFF  # HDLC-like framing's all-stations address (RFC 1662), control 0x03 follows

# --- PPP protocol numbers (RFC 1661, 1332, 5072) -------------------------------------------
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_MPLS_UNICAST = 0x0281  # RFC 3032
PPP_MPLS_MULTICAST = 0x0283
PPP_COMPRESSED = 0x01  # odd first byte: protocol-field compression, a one-byte protocol

# --- address families of the NULL / LOOP link types (BSD AF_INET, AF_INET6 per OS) ---------
AF_INET = 2
AF_INET6_BSD = 24  # NetBSD, OpenBSD, BSD/OS
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30

# --- IPv4 (RFC 791) -------------------------------------------------------------------------
IPV4_MIN_HLEN = 20
IP_DF = 0x4000  # flags/fragment-offset word: don't fragment
IP_MF = 0x2000  # more fragments
IP_OFFSET_MASK = 0x1FFF
IPPROTO_TCP = 6

# --- IPv6 (RFC 8200) and the extension headers walked to reach TCP ---------------------------
IPV6_HLEN = 40
IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51  # RFC 4302: length in 4-byte units, minus 2
IPPROTO_DSTOPTS = 60
IPV6_EXT_MIN_LEN = 8
IPV6_FRAGMENT_HLEN = 8

# --- TCP (RFC 9293) and its option kinds ----------------------------------------------------
TCP_MIN_HLEN = 20
TCP_FLAGS_NS = 0x01  # the NS bit, in the low bit of the data-offset byte (RFC 3540)
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WSCALE = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8
TCPOPT_MD5 = 19  # RFC 2385
TCPOPT_AO = 29  # RFC 5925
TCPOLEN_MSS = 4
TCPOLEN_WSCALE = 3
TCPOLEN_TIMESTAMP = 10
TCP_MAX_WSCALE = 14  # RFC 7323 2.3: a larger shift counts as 14

# --- tunnels (issue 21) ---------------------------------------------------------------------
IPPROTO_IPIP = 4  # IPv4 in IP (RFC 2003)
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41  # IPv6 in IP (RFC 4213: 6in4, and 6in6 / 4in6 as RFC 2473)
IPPROTO_GRE = 47
IPPROTO_ESP = 50  # IPsec ESP: encrypted, opaque
UDP_HLEN = 8
PORT_VXLAN = 4789  # RFC 7348
PORT_VXLAN_LINUX = 8472  # the Linux kernel's default before IANA's port
PORT_GENEVE = 6081  # RFC 8926
PORT_TEREDO = 3544  # RFC 4380
PORT_GTPU = 2152  # 3GPP TS 29.281
PORT_MPLS_UDP = 6635  # RFC 7510
VXLAN_HLEN = 8
VXLAN_FLAG_I = 0x08  # the VNI is valid
GENEVE_MIN_HLEN = 8
GTPU_HLEN = 8
GTPU_G_PDU = 0xFF
GRE_MIN_HLEN = 4
GRE_C = 0x8000  # checksum present
GRE_R = 0x4000  # routing present (RFC 1701): not decoded
GRE_K = 0x2000  # key present
GRE_S = 0x1000  # sequence number present
GRE_A = 0x0080  # acknowledgment present (enhanced GRE, version 1)
GRE_VERSION_MASK = 0x0007
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging (gretap, NVGRE, GENEVE's Ethernet)
ETHERTYPE_ERSPAN_II = 0x88BE  # type II, or type I without the sequence number
ETHERTYPE_ERSPAN_III = 0x22EB
ETHERTYPE_WCCP = 0x883E  # WCCP redirect: a 4-byte header, then IPv4
ETHERTYPE_PPP = 0x880B  # PPTP's enhanced GRE payload
ERSPAN_II_HLEN = 8
ERSPAN_III_HLEN = 12
ERSPAN_III_PLATFORM_HLEN = 8  # the optional platform-specific subheader (O bit)
ERSPAN_SESSION_MASK = 0x03FF
WCCP_HLEN = 4
PPP_ADDRESS_CONTROL = 0xFF03
TEREDO_AUTH = 0x0001  # authentication indication type
TEREDO_ORIGIN = 0x0000  # origin indication type
TEREDO_ORIGIN_LEN = 8
TEREDO_AUTH_MIN_LEN = 13  # type, two lengths, nonce (8), confirmation (1)
TEREDO_PREFIX = 0x20010000  # 2001:0::/32
IPV6_LINK_LOCAL = 0xFE80  # fe80::/10 (Teredo bubbles), top 10 bits
