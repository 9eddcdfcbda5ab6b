"""`rstlens explain OUTDIR UID`: a connection's packet ladder around its RSTs, with each
verdict and every piece of evidence spelled out — for when a verdict is in doubt."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:
    from rstlens.parsers import PacketBatch


@click.command()
@click.argument("outdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("uid")
@click.option("-r", "captures", multiple=True, metavar="FILE",
              help="Capture file(s) to take the packets from (default: the run's inputs).")
@click.option("--context", type=click.IntRange(min=0), default=6, show_default=True,
              help="Packets shown before and after each RST.")
def explain(outdir: Path, uid: str, captures: tuple[str, ...], context: int) -> None:
    """Show connection UID from the run in OUTDIR: its RSTs, verdicts and evidence, and the
    packets around each RST re-read from the capture."""
    from rstlens.errors import RstlensError

    notes: list[str] = []
    try:
        lines = explain_lines(outdir, uid, captures, context, notes)
    except (NoSuchConnection, RstlensError) as exc:
        click.echo(f"rstlens: error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"rstlens: error: {exc.strerror}: {exc.filename}", err=True)
        sys.exit(2)
    for note in notes:
        click.echo(f"rstlens: {note}", err=True)
    for line in lines:
        click.echo(line)


class NoSuchConnection(LookupError):
    """The uid is not in the run's flows.parquet."""


def explain_lines(outdir: Path, uid: str, captures: Sequence[str] = (), context: int = 6,
                  notes: list[str] | None = None) -> list[str]:  # fmt: skip
    """What `rstlens explain` prints, line by line (the HTML report embeds it too).

    Raises RstlensError for a mixed or unreadable pair of outputs, NoSuchConnection for an
    unknown uid; `notes` receives what was not found among the captures (stderr lines)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rstlens.attribution.evidence import describe
    from rstlens.output.commit import check_pair
    from rstlens.output.dataset import check_part, find_uid, is_dataset
    from rstlens.output.writer import read_metadata
    from rstlens.parsers import CaptureReader
    from rstlens.parsers._show import format_rows, tunnel_rows
    from rstlens.pipeline import source_names

    if is_dataset(outdir):
        # a rolling dataset: the part that holds the connection (and its RSTs)
        pair = find_uid(outdir, uid)
        if pair is None or pair.resets is None:
            raise NoSuchConnection(f"no connection {uid} in the dataset {outdir}")
        check_part(pair)
        flows_path, resets_path = pair.flows, pair.resets
        metas = {"flows.parquet": read_metadata(flows_path), "resets.parquet": read_metadata(resets_path)}
    else:
        names = ("flows.parquet", "resets.parquet")
        metas = {n: read_metadata(outdir / n) for n in names}
        check_pair(outdir, {n: m.get("run_id") for n, m in metas.items()},
                   {n: (outdir / n).stat().st_size for n in names})  # fmt: skip
        flows_path, resets_path = outdir / "flows.parquet", outdir / "resets.parquet"
    out: list[str] = []
    flows = pq.read_table(flows_path)
    row = flows.filter(pc.equal(flows["uid"], uid)).to_pylist()
    if not row:
        raise NoSuchConnection(f"no connection {uid} in {flows_path}")
    f = row[0]
    resets = pq.read_table(resets_path)
    rsts = resets.filter(pc.equal(resets["uid"], uid)).sort_by("ts").to_pylist()
    out.append(
        f"{uid}  {f['orig_h']}:{f['orig_p']} -> {f['resp_h']}:{f['resp_p']}  "
        f"{f['conn_state']} {f['history']}  start {f['ts'].isoformat()}  "
        f"duration {f['duration']:.6f}s  ended by {f['end_reason']}"
        + (f"  tunnel {f['tunnel']} [{f['tunnel_endpoints']}]" if f.get("tunnel") else "")
    )
    if f["rst_count"]:
        out.append(
            f"summary: {f['rst_count']} RST(s); the deciding one: {f['rst_cause']}"
            f"{'.' + f['rst_subcause'] if f['rst_subcause'] else ''} sent by {f['rst_sender']}"
            f" (confidence {f['rst_confidence']:.2f})"
        )
    for r in rsts:
        out.append("")
        cause = r["cause"] + ("." + r["subcause"] if r["subcause"] else "")
        out.append(
            f"RST {r['ts'].isoformat()} frame {r['frame']} of {r['source']}: "
            f"{r['src_h']}:{r['src_p']} > {r['dst_h']}:{r['dst_p']} [{r['flags']}] "
            f"seq {r['seq']} ack {r['ack']} ttl {r['ttl']} id {r['ip_id']} win {r['window']}"
            + (f" outer ttl {r['outer_ttl']}" if r.get("outer_ttl") is not None else "")
        )
        out.append(
            f"  verdict: {cause}  confidence {r['confidence']:.2f}  receiver: "
            f"{r['acceptability']}, ended connection: {r['ended_connection']}, "
            f"unacked bytes {r['unacked_bytes']}"
        )
        for code in r["evidence"]:
            out.append(f"  - {code}: {describe(code)}")

    recorded = metas["flows.parquet"].get("inputs", [])
    by_time = False
    run_meta = metas["flows.parquet"].get("run", {})
    kept = run_meta.get("part", {}).get("packet_files") or run_meta.get("summary", {}).get("packet_files")
    if not captures and kept and all(i.get("size") is None and i.get("path") != "-" for i in recorded):
        # a live run: its packets are in the files of -w, as the part recorded them
        recorded = [{"path": p, "abspath": p} for p in kept]
        by_time = True  # frame numbers of the live run are not the packet files' frames
    found, missing_notes = resolve_inputs(outdir, recorded, list(captures))
    if notes is not None:
        notes.extend(missing_notes)
    inputs = found
    start_us = int(f["ts"].timestamp() * 1e6)
    end_us = start_us + int(f["duration"] * 1e6) + 10_000_000
    # Only this connection's RSTs are marked: the same 5-tuple may be reused by later
    # connections (other uids) inside the window shown.
    mine = {(r["source"], int(r["frame"])): r for r in rsts}
    mine_at = {_us(r["ts"]): r for r in rsts}
    sources = source_names(inputs, live=False)  # explain re-reads files
    lines: list[tuple[int, str, bool]] = []
    # the connection's packets chosen by decoding, as analyze did (every link type and
    # encapsulation, VLAN tags part of the key; the tunnel stack too), not by a BPF filter
    reader = CaptureReader(inputs)
    pick = _ConnectionPicker(f)
    tunnelled = bool(f.get("tunnel"))
    for batch in reader:
        keep = (batch.ts_us >= start_us - 1) & (batch.ts_us <= end_us) & pick(batch)
        if tunnelled:
            keep &= tunnel_rows(batch, f)
        batch = batch.take(keep)
        texts = format_rows(batch)
        for src, frame, ts, text in zip(batch.source.tolist(), batch.frame.tolist(),
                                        batch.ts_us.tolist(), texts, strict=True):  # fmt: skip
            r = mine_at.get(ts) if by_time else mine.get((sources[src], frame))
            if r is not None:
                text += f"   <- {r['cause']}{'.' + r['subcause'] if r['subcause'] else ''}"
            lines.append((frame, text, r is not None))
    if not lines:
        missing = [i.path for i in reader.inputs if i.error]
        out.append(f"\n(no packets: the capture is not readable here {missing or inputs})")
        return out
    shown: set[int] = set()
    rst_at = [k for k, (_, _, is_rst) in enumerate(lines) if is_rst] or [0]
    for k in rst_at:
        shown.update(range(max(0, k - context), min(len(lines), k + context + 1)))
    out.append("\npacket ladder (> marks this connection's RSTs):")
    last = -1
    for k in sorted(shown):
        if last >= 0 and k != last + 1:
            out.append("   ...")
        out.append(("> " if lines[k][2] else "  ") + lines[k][1])
        last = k
    return out


def resolve_inputs(outdir: Path, recorded: list[dict[str, Any]],
                   given: list[str]) -> tuple[list[str], list[str]]:  # fmt: skip
    """The captures to re-read: `-r` files when given; else each recorded input found by
    its absolute path, then by its path relative to OUTDIR (and its name in OUTDIR), then
    as recorded (relative to the current directory).  Each is checked against the head
    hash the run recorded; notes say what was not found or differs."""
    from rstlens.parsers._info import head_digest

    notes: list[str] = []
    if given:
        chosen = given
        return chosen, notes
    chosen = []
    for entry in recorded:
        path = str(entry.get("path", ""))
        candidates = [entry.get("abspath"), os.path.join(outdir, path),
                      os.path.join(outdir, os.path.basename(path)), path]  # fmt: skip
        found = next((c for c in candidates if c and path != "-" and os.path.isfile(c)), None)
        if found is None:
            notes.append(f"{path}: note: capture not found (tried {entry.get('abspath') or path} "
                         f"and beside {outdir}); give it with -r FILE")  # fmt: skip
            continue
        want = entry.get("head_sha256")
        digest = head_digest(found)
        if want and digest is not None and digest[1] != want:
            notes.append(f"{found}: warning: not the capture the run read (its first 64 KiB "
                         f"differ); give the right one with -r FILE")  # fmt: skip
        elif entry.get("size") is not None and digest is not None and digest[0] != entry["size"]:
            notes.append(f"{found}: warning: {digest[0]} bytes, the run read {entry['size']}")
        chosen.append(found)
    return chosen, notes


def _us(ts: Any) -> int:
    """A timestamp of the records in µs since the epoch, exactly (no float rounding)."""
    delta = ts - ts.replace(hour=0, minute=0, second=0, microsecond=0)
    day = int(ts.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    return int(day * 1_000_000 + (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _address(text: str) -> tuple[int, int]:
    """An address as `PacketBatch` holds it: (hi, lo), IPv4 in its mapped form."""
    import ipaddress

    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return 0, 0xFFFF_0000_0000 | int(ip)
    v = int(ip)
    return v >> 64, v & 0xFFFF_FFFF_FFFF_FFFF


class _ConnectionPicker:
    """Rows of a batch that belong to the flow's 5-tuple and VLAN tags, either way."""

    def __init__(self, f: dict[str, Any]) -> None:
        self.o = _address(f["orig_h"])
        self.r = _address(f["resp_h"])
        self.op, self.rp = int(f["orig_p"]), int(f["resp_p"])
        self.vlan = -1 if f.get("vlan") is None else int(f["vlan"])
        self.inner = -1 if f.get("inner_vlan") is None else int(f["inner_vlan"])

    def __call__(self, b: PacketBatch) -> np.ndarray:
        def side(a: tuple[int, int], ap: int, z: tuple[int, int], zp: int) -> np.ndarray:
            m: np.ndarray = ((b.src_hi == np.uint64(a[0])) & (b.src_lo == np.uint64(a[1]))
                             & (b.dst_hi == np.uint64(z[0])) & (b.dst_lo == np.uint64(z[1]))
                             & (b.sport == ap) & (b.dport == zp))  # fmt: skip
            return m

        fwd = side(self.o, self.op, self.r, self.rp)
        rev = side(self.r, self.rp, self.o, self.op)
        keep: np.ndarray = (fwd | rev) & (b.vlan == self.vlan) & (b.inner_vlan == self.inner)
        return keep
