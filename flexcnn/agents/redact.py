"""Hide passwords in storage URLs before a command line is logged or printed."""

from __future__ import annotations

import re
from collections.abc import Sequence

# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact(text: str) -> str:
    """``postgresql://u:secret@db/optuna`` -> ``postgresql://u:***@db/optuna``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """:func:`redact` applied to each argument."""
    return [redact(arg) for arg in argv]
