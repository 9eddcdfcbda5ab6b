"""Zeek's `likely_server_ports`: the ports its default scripts register for their analyzers.

Zeek flips a connection whose first packet is not a plain SYN when that packet comes from
one of these ports (and goes to a port that is not one).  The set below is what a default
(non-bare) Zeek loads: each protocol script adds its analyzer's well-known TCP ports.
"""

from __future__ import annotations

import numpy as np

_PORTS = (
    # HTTP
    80, 81, 631, 1080, 3128, 8000, 8080, 8888,
    # SSL/TLS
    443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223,
    # SSH, FTP, SMTP, POP3, IMAP, IRC
    22, 21, 2811, 25, 587, 110, 143, 6666, 6667, 6668, 6669,
    # DNS, NetBIOS/SMB, DCE-RPC, Kerberos, LDAP, RDP, MySQL, PostgreSQL, Redis
    53, 5353, 5355, 137, 139, 445, 135, 88, 389, 3268, 3389, 3306, 5432, 6379,
    # Modbus, DNP3, SIP, XMPP, SOCKS, RFB/VNC, MQTT, syslog, SNMP, NTP, RADIUS, Telnet/rlogin
    502, 20000, 5060, 5222, 5269, 5900, 5901, 1883, 514, 161, 162, 123, 1812, 23, 513, 543, 544,
)  # fmt: skip


def likely_server_ports() -> np.ndarray:
    """A 65536-entry boolean table, True for the ports above."""
    table = np.zeros(65536, np.bool_)
    table[list(_PORTS)] = True
    return table
