"""Tables that never cut an identifier: rich on a terminal wide enough, full plain rows otherwise.

Rich shrinks a table to the console's width and truncates cells with "…"; piped, it assumes 80
columns, so ``srkd models | grep edsr-baseline-x4`` found nothing. :func:`show` prints the rich
table only when its natural width fits a real terminal. Otherwise it prints the same cells as plain
left-aligned columns, one row per line, however long the lines get.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def _plain(cell) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(str(cell)).plain if isinstance(cell, str) else str(cell)


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a rich table as plain strings."""
    header = [_plain(c.header) for c in table.columns]
    cells = [[_plain(x) for x in c._cells] for c in table.columns]
    n = max((len(c) for c in cells), default=0)
    return header, [[col[i] if i < len(col) else "" for col in cells] for i in range(n)]


def fits(console: Console, table: Table) -> bool:
    if not console.is_terminal:
        return False
    # measured without the console's width limit: the natural width of the widest row
    return Measurement.get(console, console.options.update_width(1 << 20), table).maximum <= console.width


def show(console: Console, table: Table) -> None:
    if fits(console, table):
        console.print(table)
        return
    header, rows = table_rows(table)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    right = [c.justify == "right" for c in table.columns]

    def line(cells):
        out = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)]
        return "  ".join(out).rstrip()

    title = _plain(table.title) if table.title else ""
    text = ([title] if title else []) + ([line(header)] if table.show_header else []) + [line(r) for r in rows]
    # plain writes: rich would wrap these lines at its width
    out = console.file or sys.stdout
    out.write("\n".join(text) + "\n")
    out.flush()


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
