"""``NAME_FILE`` secrets: a Docker or Kubernetes secret mounted as a file, read into ``NAME``.

A secret passed as a file stays out of ``docker inspect``, the pod spec and the
image. Every ``flexcnn`` command reads ``WANDB_API_KEY_FILE`` and
``PGPASSWORD_FILE`` once, at start (:func:`load_secret_files`), into
``WANDB_API_KEY`` (which wandb reads) and ``PGPASSWORD`` (which libpq reads, so
a PostgreSQL URL needs no password in it), and drops the ``_FILE`` variable so
the processes it starts (agents, workers, ``wandb agent`` runs) inherit the
value and do not read the file again. The value is never printed or logged;
messages name the variable and the file only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from flexcnn.errors import UserError

SECRET_FILE_VARS = ("WANDB_API_KEY", "PGPASSWORD")


def resolve_secret_files(env: Mapping[str, str], names: Sequence[str] = SECRET_FILE_VARS) -> dict[str, str]:
    """A copy of ``env`` where each ``NAME_FILE`` is read into ``NAME`` and removed.

    UserError when both ``NAME`` and ``NAME_FILE`` are set, or the file is missing,
    unreadable or empty. An empty ``NAME_FILE`` counts as unset.
    """
    out = dict(env)
    for name in names:
        path = out.pop(f"{name}_FILE", None)
        if not path:
            continue
        if env.get(name):
            raise UserError(f"both {name} and {name}_FILE are set; set only one of them")
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise UserError(f"{name}_FILE={path}: cannot read the secret file ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise UserError(f"{name}_FILE={path}: the secret file is not text") from None
        if not value:
            raise UserError(f"{name}_FILE={path}: the secret file is empty")
        out[name] = value
    return out


def load_secret_files(environ: MutableMapping[str, str] | None = None) -> None:
    """Resolve the ``NAME_FILE`` secrets into ``environ`` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    resolved = resolve_secret_files(environ)
    for name in SECRET_FILE_VARS:
        environ.pop(f"{name}_FILE", None)
        if name in resolved:
            environ[name] = resolved[name]
