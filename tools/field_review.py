"""Review aid for the field corpus: list every TCP RST with the packet ladder of its connection.

Reads packets with tshark directly (never rstlens verdicts), so the reviewed labels in
tests/core/data/field_rst_truth.csv stay independent of the tool they judge.

    python -m tools.field_review FILE [FILE ...]        # ladders around every RST
    python -m tools.field_review --all --facts          # one line of wire facts per RST (for clustering)
    python -m tools.field_review --write-known-misses   # regenerate tests/core/data/field_known_misses.csv

RSTs are what tshark shows with ``-Y tcp.flags.reset==1`` (inner headers of tunnels included);
``frame`` is the 1-based record number, as Wireshark and rstlens' ``resets.frame`` count.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIELD = REPO.parent / "shared" / "corpus" / "field"  # beside the repository, as tests/conftest.py
DATA = REPO / "tests" / "core" / "data"

_FIELDS = [
    "frame.number", "frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "tcp.srcport", "tcp.dstport", "tcp.stream", "tcp.flags", "tcp.seq", "tcp.seq_raw",
    "tcp.ack", "tcp.ack_raw", "tcp.len", "ip.ttl", "ipv6.hlim", "ip.id",
    "tcp.window_size_value", "tcp.options", "tcp.checksum.status", "tcp.payload",
]
_FLAG_NAMES = ((0x02, "S"), (0x10, "A"), (0x08, "P"), (0x01, "F"), (0x04, "R"), (0x20, "U"),
               (0x40, "E"), (0x80, "C"))


@dataclass
class Pkt:
    frame: int
    t: float
    src: str
    dst: str
    stream: int
    flags: int
    seq: int      # relative (tshark)
    seq_raw: int
    ack: int
    ack_raw: int
    length: int
    ttl: int
    ipid: int     # -1 for IPv6
    win: int
    options: str  # hex
    cksum_bad: bool
    payload: bytes

    @property
    def rst(self) -> bool:
        return bool(self.flags & 0x04)

    def flag_text(self) -> str:
        return "".join(n for bit, n in _FLAG_NAMES if self.flags & bit) or "."

    def text(self, limit: int = 40) -> str:
        s = "".join(chr(b) if 32 <= b < 127 else "." for b in self.payload[:limit])
        return s + ("..." if len(self.payload) > limit else "")


def _int(v: str, default: int = 0) -> int:
    if not v:
        return default
    return int(v, 16) if v.startswith("0x") else int(v)


def load(path: Path) -> list[Pkt]:
    """Every TCP packet of ``path`` (innermost IP/TCP header when tunnelled)."""
    cmd = ["tshark", "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-Y", "tcp",
           "-T", "fields", "-E", "occurrence=l", "-E", "separator=|"]
    for f in _FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    pkts = []
    for line in out.splitlines():
        v = dict(zip(_FIELDS, line.split("|"), strict=True))
        v6 = bool(v["ipv6.src"]) and not v["ip.src"]
        pkts.append(Pkt(
            frame=int(v["frame.number"]), t=float(v["frame.time_epoch"]),
            src=f"{v['ipv6.src'] if v6 else v['ip.src']}:{v['tcp.srcport']}",
            dst=f"{v['ipv6.dst'] if v6 else v['ip.dst']}:{v['tcp.dstport']}",
            stream=_int(v["tcp.stream"]), flags=_int(v["tcp.flags"]),
            seq=_int(v["tcp.seq"]), seq_raw=_int(v["tcp.seq_raw"]),
            ack=_int(v["tcp.ack"]), ack_raw=_int(v["tcp.ack_raw"]), length=_int(v["tcp.len"]),
            ttl=_int(v["ipv6.hlim"] if v6 else v["ip.ttl"]), ipid=-1 if v6 else _int(v["ip.id"]),
            win=_int(v["tcp.window_size_value"]), options=v["tcp.options"].replace(":", ""),
            cksum_bad=v["tcp.checksum.status"] == "0",
            payload=bytes.fromhex(v["tcp.payload"].replace(":", "")),
        ))
    return pkts


def line(p: Pkt, t0: float, mark: str = " ") -> str:
    ipid = "-" if p.ipid < 0 else f"{p.ipid:#06x}"
    opts = p.options[:24] + ("+" if len(p.options) > 24 else "")
    bad = " BADCSUM" if p.cksum_bad else ""
    txt = f" {p.text()!r}" if p.payload else ""
    return (f"{mark}{p.frame:>6} {p.t - t0:>11.6f} {p.src:>22} > {p.dst:<22} {p.flag_text():<4} "
            f"seq {p.seq:>10} ({p.seq_raw:>10}) ack {p.ack:>10} ({p.ack_raw:>10}) len {p.length:>5} "
            f"ttl {p.ttl:>3} id {ipid} win {p.win:>5} opt {opts or '-'}{bad}{txt}")


def ladder(pkts: list[Pkt], before: int = 8, after: int = 4) -> list[str]:
    """For each RST: its connection's first packet, then ``before``/``after`` packets around it."""
    by_stream: dict[int, list[Pkt]] = {}
    for p in pkts:
        by_stream.setdefault(p.stream, []).append(p)
    lines = []
    for p in pkts:
        if not p.rst:
            continue
        conn = by_stream[p.stream]
        i = conn.index(p)
        lines.append(f"== RST frame {p.frame}  stream {p.stream}  ({len(conn)} packets, "
                     f"#{i + 1} in connection)")
        t0 = conn[0].t
        lo = max(0, i - before)
        if lo > 0:
            lines.append(line(conn[0], t0, "^"))
            if lo > 1:
                lines.append(f"   ... {lo - 1} packets")
        for q in conn[lo:i + after + 1]:
            lines.append(line(q, t0, ">" if q is p else " "))
        if i + after + 1 < len(conn):
            lines.append(f"   ... {len(conn) - i - after - 1} more, last at "
                         f"{conn[-1].t - t0:.3f}s")
    return lines


def facts(pkts: list[Pkt]) -> list[dict[str, object]]:
    """Wire facts per RST, for grouping RSTs with the same context (not a verdict)."""
    by_stream: dict[int, list[Pkt]] = {}
    for p in pkts:
        by_stream.setdefault(p.stream, []).append(p)
    rows: list[dict[str, object]] = []
    for p in pkts:
        if not p.rst:
            continue
        conn = by_stream[p.stream]
        i = conn.index(p)
        prior, later = conn[:i], conn[i + 1:]
        mine = [q for q in prior if q.src == p.src]
        peer = [q for q in prior if q.src == p.dst]
        syn = next((q for q in conn if q.flags & 0x12 == 0x02), None)
        synack = any(q.flags & 0x12 == 0x12 for q in prior)
        last_peer = peer[-1] if peer else None
        dup = next((q for q in reversed(prior) if q.src == p.src and q.flags == p.flags
                    and q.seq_raw == p.seq_raw and q.ack_raw == p.ack_raw and q.ipid == p.ipid
                    and q.length == p.length and p.t - q.t < 0.01), None)
        rows.append({
            "frame": p.frame, "stream": p.stream, "flags": p.flag_text(),
            "role": ("orig" if syn and syn.src == p.src else "resp") if syn else "nosyn",
            "synack": synack, "n_prior": len(prior), "n_mine": len(mine), "n_peer": len(peer),
            "seq_raw": p.seq_raw, "ack_raw": p.ack_raw, "len": p.length,
            "ttl": p.ttl, "my_ttls": sorted({q.ttl for q in mine if not q.rst}),
            "ipid": p.ipid, "my_last_ipid": next((q.ipid for q in reversed(mine) if not q.rst), None),
            "win": p.win, "opts": p.options, "cksum_bad": p.cksum_bad, "text": p.text(),
            "my_fin": any(q.flags & 0x01 for q in mine), "peer_fin": any(q.flags & 0x01 for q in peer),
            "my_rst_before": any(q.rst for q in mine), "peer_rst_before": any(q.rst for q in peer),
            "lp_flags": last_peer.flag_text() if last_peer else "",
            "seq_eq_lp_ack": bool(last_peer and last_peer.flags & 0x10 and p.seq_raw == last_peer.ack_raw),
            "ack_eq_lp_end": bool(last_peer and p.ack_raw == (last_peer.seq_raw + last_peer.length
                                  + (1 if last_peer.flags & 0x03 else 0)) % 2**32),
            "gap": round(p.t - last_peer.t, 6) if last_peer else None,
            "mine_after": sum(1 for q in later if q.src == p.src and not q.rst),
            "peer_after": sum(1 for q in later if q.src == p.dst),
            "dup_of": dup.frame if dup else None,
        })
    return rows


def field_files() -> list[Path]:
    return sorted(p for p in FIELD.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))


# why rstlens gets a pattern wrong, by (truth cause, rstlens cause): issue 17's failure modes
WHY = {
    ("half_open", "unknown"): "secondary/no-state RST (seq = ack of a late peer segment after the "
                              "sender's own FIN or RST, or an uncaptured trigger) matched no rule "
                              "(issue 17 item 4)",
    ("half_open", "abort"): "RST answering data after the sender's FIN (Windows/BSD RST+ACK form, or "
                            "trigger not captured) taken for an active abort (issue 17 item 4)",
    ("half_open", "middlebox"): "reactive RST judged on raw TTL: same hop distance as the sender, "
                                "or nothing else from the sender to compare (issue 17 item 2)",
    ("abort", "unknown"): "active abort without a visible trigger: capture starts mid-connection, "
                          "SYN-SENT give-up, keepalive/retransmission timeout, one-way capture "
                          "(issue 17 item 3)",
    ("abort", "middlebox"): "a delayed capture copy (second tap, TTL-1) of an earlier packet taken "
                            "as the sender carrying on (issue 17 item 1)",
    ("abort", "half_open"): "active abort taken for a no-state reply",
    ("unknown", "middlebox"): "middlebox verdict on one anomaly with no context (corrupted segment, "
                              "lone RST with a different TTL) (issue 17 items 2, 10)",
    ("middlebox", "abort"): "the front end's TTL/IP ID/window differ from the data sender's but "
                            "match the SYN-ACK's, so they pass as the host's own (issue 17 items 2, 7)",
}


def write_known_misses(out: Path = DATA / "field_known_misses.csv") -> int:
    """Rows where rstlens' current cause differs from the reviewed truth (for the field test)."""
    import rstlens

    with open(DATA / "field_rst_truth.csv", newline="") as fh:
        truth = {(r["source"], int(r["frame"])): r for r in csv.DictReader(fh)}
    misses = []
    for f in field_files():
        rel = str(f.relative_to(FIELD))
        res = rstlens.analyze(f).resets
        for frame, cause, sub in zip(res["frame"], res["cause"].astype(str),
                                     res["subcause"].astype(object), strict=True):
            t = truth.get((rel, int(frame)))
            if t is not None and cause != t["cause"]:
                why = WHY.get((t["cause"], cause), f"rstlens {cause} vs truth {t['cause']}")
                misses.append({"source": rel, "frame": int(frame), "rstlens_cause": cause,
                               "rstlens_subcause": "" if sub is None or sub != sub else str(sub),
                               "truth_cause": t["cause"], "why_missed": f"{why}; truth: {t['reason']}"})
    misses.sort(key=lambda m: (str(m["source"]), int(str(m["frame"]))))
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "frame", "rstlens_cause", "rstlens_subcause",
                                           "truth_cause", "why_missed"])
        w.writeheader()
        w.writerows(misses)
    return len(misses)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every capture under " + str(FIELD))
    ap.add_argument("--facts", action="store_true", help="one line of wire facts per RST")
    ap.add_argument("--before", type=int, default=8)
    ap.add_argument("--after", type=int, default=4)
    ap.add_argument("--write-known-misses", action="store_true")
    a = ap.parse_args(argv)
    if a.write_known_misses:
        print(f"{write_known_misses()} known misses written")
        return 0
    files = field_files() if a.all else a.files
    for f in files:
        pkts = load(f)
        name = str(f.relative_to(FIELD)) if f.is_relative_to(FIELD) else str(f)
        if a.facts:
            for r in facts(pkts):
                print(name, *(f"{k}={v}" for k, v in r.items()))
        else:
            print(f"##### {name}")
            print("\n".join(ladder(pkts, a.before, a.after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
