"""Which W&B mode a run logs in: online, offline (for ``wandb sync`` later) or disabled.

Decided from the caller's request, the config, ``wandb agent``'s environment,
W&B's own ``WANDB_MODE`` / ``WANDB_DISABLED``, whether credentials exist and
whether the server answers. Nothing here imports wandb, so a run that ends up
``disabled`` never pays for it. The API key is never read into our code: login
detection only asks whether one exists.
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from flexcnn.config import RunConfig
from flexcnn.errors import ConfigError
from flexcnn.sections import WANDB_MODES

# The package's logger, not this module's: users see and filter one "flexcnn.reporters.wandb".
log = logging.getLogger("flexcnn.reporters.wandb")

Mode = Literal["online", "offline", "disabled"]
DEFAULT_BASE_URL = "https://api.wandb.ai"

# WANDB_MODE values wandb accepts, by what they mean to us (dryrun = offline, run = online).
_WANDB_MODES: dict[str, Mode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "shared": "online",
}


@dataclass(frozen=True)
class ModeDecision:
    """The resolved W&B mode and why, for one line of explanation to the user."""

    mode: Mode
    reason: str
    auto: bool = False  # chosen by `auto`: an online run may fall back to offline


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def env_mode(env: Mapping[str, str]) -> Mode | None:
    """W&B's own switches: WANDB_MODE (dryrun = offline, run = online) and WANDB_DISABLED; blank is unset.

    An unknown WANDB_MODE is a ConfigError here: wandb.init would otherwise fail on it with a traceback.
    """
    if _truthy(env.get("WANDB_DISABLED")):
        return "disabled"
    raw = (env.get("WANDB_MODE") or "").strip()
    if raw and raw.lower() not in _WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={raw!r} is not a W&B mode: use online, offline or disabled, or unset it")
    return _WANDB_MODES.get(raw.lower())


def base_url(env: Mapping[str, str]) -> str:
    """The W&B server this process would talk to."""
    return (env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def logged_in(env: Mapping[str, str]) -> bool:
    """Whether W&B credentials exist (API key variable or file, identity token or a netrc entry).

    Only presence is checked; the key itself is never returned, printed or stored.
    ``WANDB_API_KEY_FILE`` (a mounted secret) counts when the file holds something:
    ``flexcnn`` reads it into WANDB_API_KEY at start (flexcnn.secret_files).
    """
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    key_file = env.get("WANDB_API_KEY_FILE")
    with contextlib.suppress(OSError):
        if key_file and Path(key_file).stat().st_size > 0:
            return True
    host = urlsplit(base_url(env)).netloc
    if not host:
        return False
    # Same lookup order as wandb: $NETRC, then ~/.netrc, then ~/_netrc.
    candidates = [Path(env["NETRC"])] if env.get("NETRC") else [Path("~/.netrc"), Path("~/_netrc")]
    for path in candidates:
        path = path.expanduser()
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            return False
        return bool(entry and entry[2])
    return False


def server_reachable(env: Mapping[str, str], timeout: float = 2.0) -> bool:
    """A TCP connect to the W&B server, so a logged-in node without internet goes offline at once.

    wandb.init itself would wait up to 90 s before failing. Behind an HTTP(S)
    proxy a direct connect proves nothing, so the server counts as reachable.
    """
    if any(env.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    parts = urlsplit(base_url(env))
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(
    config: RunConfig,
    mode: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    reachable: Callable[[Mapping[str, str]], bool] = server_reachable,
) -> ModeDecision:
    """Decide online / offline / disabled for one run.

    Precedence: the ``mode`` argument (``--wandb-mode`` of the Optuna CLI), then
    ``logging.wandb.mode`` when the config sets it, then, under ``wandb agent``
    (``WANDB_SWEEP_ID`` set), ``auto``; otherwise the default ``disabled``.
    ``auto`` follows ``WANDB_MODE`` / ``WANDB_DISABLED`` when set, else goes
    online when credentials exist and the server answers, offline otherwise.
    """
    env = os.environ if env is None else env
    requested, source = _requested_mode(config, mode, env)
    if requested != "auto":
        return _explicit_mode(requested, source, env)
    from_env = env_mode(env)
    if from_env is not None:
        return ModeDecision(from_env, "WANDB_MODE/WANDB_DISABLED", auto=True)
    if not logged_in(env):
        return ModeDecision("offline", "no W&B login found in WANDB_API_KEY or netrc", auto=True)
    if not reachable(env):
        return ModeDecision("offline", f"W&B server {base_url(env)} is unreachable", auto=True)
    return ModeDecision("online", "logged in", auto=True)


def _requested_mode(config: RunConfig, mode: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """The mode asked for, and who asked: the argument, the config, ``wandb agent`` or the default."""
    wb = config.logging.wandb
    if mode is not None:
        requested, source = mode, "requested"
    elif "mode" in wb.model_fields_set:
        requested, source = wb.mode, "logging.wandb.mode"
    elif env.get("WANDB_SWEEP_ID"):
        requested, source = "auto", "running under wandb agent"
    else:
        requested, source = wb.mode, "default"
    if requested not in WANDB_MODES:
        raise ConfigError(f"W&B mode {requested!r} is not one of {', '.join(WANDB_MODES)}")
    return requested, source


def _explicit_mode(requested: str, source: str, env: Mapping[str, str]) -> ModeDecision:
    """An explicit online / offline / disabled, checked against what it cannot do here."""
    if requested == "disabled" and env.get("WANDB_SWEEP_ID"):
        log.warning("running under wandb agent but W&B is disabled (%s): the sweep will see no metrics", source)
    if requested == "online" and not logged_in(env):
        raise ConfigError(
            "W&B mode online but no credentials found: run `wandb login` or set WANDB_API_KEY, "
            "or use --wandb-mode offline (sync later with `wandb sync`)"
        )
    return ModeDecision(requested, source)  # type: ignore[arg-type]
