"""`rstlens packets`: one tcpdump-like line per decoded TCP packet.

Exit status: 0 when every input was read (warnings allowed), 1 when some inputs could not
be read but others were, 2 when no input was readable or the arguments were bad.
"""

from __future__ import annotations

import sys

import click

from rstlens.cli.args import split_inputs_and_filter
from rstlens.parsers import CaptureError, CaptureReader
from rstlens.parsers import _linktypes as lt
from rstlens.parsers._show import format_rows, rst_mask


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--rst-only", is_flag=True, help="Only show segments with the RST flag.")
@click.option("-c", "count", type=click.IntRange(min=0), default=None, help="Stop after N records.")
@click.argument("args", nargs=-1, required=True)
def packets(rst_only: bool, count: int | None, args: tuple[str, ...]) -> None:
    """Show the TCP packets rstlens decodes from FILE... [BPF EXPRESSION...].

    Arguments that name an existing path (or "-" for stdin) are inputs; the words after
    the first one that does not are a BPF filter, as with tcpdump.  Flags print as
    tcpdump does: [S.] = SYN+ACK, [R] = RST, [.] = ACK only.
    """
    files, bpf = split_inputs_and_filter(args)
    try:
        reader = CaptureReader(files, bpf=bpf, count=count)
    except CaptureError as exc:
        click.echo(f"rstlens: {exc}", err=True)
        sys.exit(2)
    out = sys.stdout
    try:
        for batch in reader:
            if rst_only:
                batch = batch.take(rst_mask(batch))
            if len(batch):
                out.write("\n".join(format_rows(batch)) + "\n")
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        sys.exit(0)
    failed = 0
    for info in reader.inputs:
        for w in info.warnings:
            click.echo(f"rstlens: {info.path}: warning: {w}", err=True)
        if info.error:
            failed += 1
            click.echo(f"rstlens: {info.path}: error: {info.error}", err=True)
    s = reader.stats
    click.echo(
        f"rstlens: {s.packets} records, {s.tcp} TCP, {s.non_tcp} other IP, {s.non_ip} non-IP, "
        f"{s.ip_fragments} fragments, {s.truncated} truncated, {s.malformed} malformed, "
        f"{s.unsupported_link} on unsupported link types; link types "
        + ", ".join(lt.name(k) for k in sorted({k for i in reader.inputs for k in i.link_types})),
        err=True,
    )
    if failed == len(reader.inputs):
        sys.exit(2)
    sys.exit(1 if failed else 0)
