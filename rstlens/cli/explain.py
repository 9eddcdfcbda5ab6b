"""`rstlens explain OUTDIR UID`: a connection's packet ladder around its RSTs, with each
verdict and every piece of evidence spelled out — for when a verdict is in doubt."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click


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
    try:
        lines = explain_lines(outdir, uid, captures, context)
    except NoSuchConnection as exc:
        click.echo(f"rstlens: error: {exc}", err=True)
        sys.exit(2)
    for line in lines:
        click.echo(line)


class NoSuchConnection(LookupError):
    """The uid is not in the run's flows.parquet."""


def explain_lines(outdir: Path, uid: str, captures: Sequence[str] = (), context: int = 6) -> list[str]:
    """What `rstlens explain` prints, line by line (the HTML report embeds it too)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from rstlens.attribution.evidence import describe
    from rstlens.output.writer import read_metadata
    from rstlens.parsers import CaptureReader
    from rstlens.parsers._show import format_rows, tunnel_rows
    from rstlens.pipeline import source_name

    out: list[str] = []
    flows = pq.read_table(outdir / "flows.parquet")
    row = flows.filter(pc.equal(flows["uid"], uid)).to_pylist()
    if not row:
        raise NoSuchConnection(f"no connection {uid} in {outdir / 'flows.parquet'}")
    f = row[0]
    resets = pq.read_table(outdir / "resets.parquet")
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

    inputs = list(captures) or [i["path"] for i in read_metadata(outdir / "flows.parquet")["inputs"]]
    bpf = (f"tcp and host {f['orig_h']} and host {f['resp_h']} "
           f"and port {f['orig_p']} and port {f['resp_p']}")  # fmt: skip
    start_us = int(f["ts"].timestamp() * 1e6)
    end_us = start_us + int(f["duration"] * 1e6) + 10_000_000
    # Only this connection's RSTs are marked: the same 5-tuple may be reused by later
    # connections (other uids) inside the window shown.
    mine = {(r["source"], int(r["frame"])): r for r in rsts}
    sources = [source_name(p, live=False) for p in inputs]  # explain re-reads files
    lines: list[tuple[int, str, bool]] = []
    tunnelled = bool(f.get("tunnel"))  # a BPF `tcp` does not see inside tunnels: filter here
    reader = CaptureReader(inputs, bpf=None if tunnelled else bpf)
    for batch in reader:
        keep = (batch.ts_us >= start_us - 1) & (batch.ts_us <= end_us)
        if tunnelled:
            keep &= tunnel_rows(batch, f)
        batch = batch.take(keep)
        texts = format_rows(batch)
        for src, frame, text in zip(batch.source.tolist(), batch.frame.tolist(), texts, strict=True):
            r = mine.get((sources[src], frame))
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
