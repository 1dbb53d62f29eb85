"""How the study runner tells the user what happens: one line at a time, printed at once."""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]


def print_line(text: str) -> None:
    """Print ``text`` and flush, so lines from several worker processes interleave whole and in time."""
    print(text, flush=True)
