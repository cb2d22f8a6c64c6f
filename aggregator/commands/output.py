"""What the commands print: plain text for people, ``--json`` for scripts, colour rarely.

Colour only when stdout is a terminal and ``NO_COLOR`` is unset (https://no-color.org);
rich already honours both, and ``highlight=False`` keeps it from colouring ids and
numbers on its own. Scripts should pass ``--json``: the human layout may change.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table


def console() -> Console:
    """A console on stdout that colours only a terminal, never under ``NO_COLOR``."""
    no_colour = "NO_COLOR" in os.environ and os.environ["NO_COLOR"] != ""
    return Console(file=sys.stdout, highlight=False, no_color=no_colour, soft_wrap=True,
                   emoji=False)


def when(value: datetime | None) -> str:
    """A timestamp as operators read it (UTC, to the second), or ``-``."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_table(columns: Sequence[str], rows: Sequence[Mapping[str, str]],
                styles: Mapping[str, str] | None = None) -> None:
    """A borderless table; ``styles`` colours a column (only where colour is allowed)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "), style=(styles or {}).get(column))
    for row in rows:
        table.add_row(*(row.get(c, "") for c in columns))
    console().print(table)


EXAMPLES = "examples:\n"


def examples(*lines: str) -> str:
    """An ``epilog`` with examples, for a parser built with RawDescriptionHelpFormatter."""
    return EXAMPLES + "".join(f"  {line}\n" for line in lines)
