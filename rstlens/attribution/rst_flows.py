"""The connections that had RSTs, kept (in narrow form) until their RSTs' verdicts are final."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rstlens.flows import layout as L
from rstlens.flows.columns import NarrowRows
from rstlens.flows.engine import Finished
from rstlens.output import arrow
from rstlens.output.records import RECORD_COLUMNS, HeldRows

# what is kept of a connection's kernel row: what its record is made of, when it ended (the
# time of its last packet: --linger), and the key columns `ended.match` compares
HELD_COLUMNS: tuple[int, ...] = tuple(sorted({*RECORD_COLUMNS, L.PKT_LAST, L.HASH, L.KEY_PORTS,
                                              L.KEY_EXTRA, L.TUNNEL}))  # fmt: skip


@dataclass
class RstFlows:
    """The connections that had RSTs, held until their verdicts are final: per drain, the
    columns of their kernel rows that make their records (`HELD_COLUMNS`) and their key
    rows, each narrowed (`flows.columns.narrowest`: a 500,000-connection scan's are ~51
    bytes a connection; its flow records had been ~280), and their history letters.  Their records
    are made when they are written (`output.records.flow_table` of `HeldRows`)."""

    blocks: list[HeldRows] = field(default_factory=list)

    def add(self, fin: Finished) -> None:
        if fin.F.shape[0]:
            self.blocks.append(HeldRows(NarrowRows.of(fin.F, HELD_COLUMNS), NarrowRows.of(fin.K, range(L.NKO)),
                                        arrow.nul_padded_text(fin.H)))  # fmt: skip

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    @property
    def nbytes(self) -> int:
        return sum(b.F.nbytes + b.K.nbytes + b.history.nbytes for b in self.blocks)

    def held(self) -> HeldRows:
        """Every connection held, in the order they were added, as one `HeldRows` (the
        blocks are joined column by column, each given up as it is copied)."""
        if len(self.blocks) != 1:
            histories = [b.history for b in self.blocks]
            self.blocks = [HeldRows(NarrowRows.join([b.F for b in self.blocks]),
                                    NarrowRows.join([b.K for b in self.blocks]),
                                    pa.chunked_array(histories, pa.string()).combine_chunks()
                                    if histories else arrow.strings([]))]  # fmt: skip
        return self.blocks[0]

    def split(self, ended_before: int) -> RstFlows:
        """Take out the connections whose last packet came before `ended_before` (µs)."""
        taken, kept = RstFlows(), RstFlows()
        for b in self.blocks:
            done = b.F[:, L.PKT_LAST] < ended_before
            for part, mask in ((taken, done), (kept, ~done)):
                if mask.all():
                    part.blocks.append(b)
                elif mask.any():
                    part.blocks.append(HeldRows(b.F[mask], b.K[mask],
                                                b.history.filter(arrow.boolean_mask(mask))))  # fmt: skip
        self.blocks = kept.blocks
        return taken

    def all_serials(self) -> np.ndarray:
        if not self.blocks:
            return np.empty(0, np.int64)
        return np.concatenate([b.F[:, L.SERIAL] for b in self.blocks])
