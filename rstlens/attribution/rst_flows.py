"""The connections that had RSTs, kept (as flow rows) until their RSTs' verdicts are final."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rstlens.output import arrow


@dataclass
class RstFlows:
    """The connections that had RSTs, held until their verdicts are final."""

    tables: list[pa.Table] = field(default_factory=list)
    serials: list[np.ndarray] = field(default_factory=list)
    orig_is_a: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    ended: list[np.ndarray] = field(default_factory=list)  # time of each one's last packet
    conn: list[np.ndarray] = field(default_factory=list)  # ended.KEY_COLUMNS of each

    def add(self, table: pa.Table, serials: np.ndarray, orig_is_a: np.ndarray,
            keys: np.ndarray, ended: np.ndarray, conn: np.ndarray | None = None) -> None:  # fmt: skip
        if table.num_rows:
            self.tables.append(table)
            self.serials.append(serials)
            self.orig_is_a.append(orig_is_a)
            self.keys.append(keys)
            self.ended.append(ended)
            self.conn.append(np.zeros((table.num_rows, 4), np.int64) if conn is None else conn)

    def __len__(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def split(self, ended_before: int) -> RstFlows:
        """Take out the connections whose last packet came before `ended_before` (µs)."""
        if not self.tables:
            return RstFlows()
        ended = np.concatenate(self.ended)
        done = ended < ended_before
        taken, kept = RstFlows(), RstFlows()
        table = pa.concat_tables(self.tables)
        for part, mask in ((taken, done), (kept, ~done)):
            if mask.any():
                part.add(table.filter(arrow.boolean_mask(mask)), np.concatenate(self.serials)[mask],
                         np.concatenate(self.orig_is_a)[mask], np.concatenate(self.keys)[mask],
                         ended[mask], np.concatenate(self.conn)[mask])  # fmt: skip
        self.tables, self.serials, self.orig_is_a = kept.tables, kept.serials, kept.orig_is_a
        self.keys, self.ended, self.conn = kept.keys, kept.ended, kept.conn
        return taken

    def all_serials(self) -> np.ndarray:
        return np.concatenate(self.serials) if self.serials else np.empty(0, np.int64)
