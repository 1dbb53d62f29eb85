"""W&B's service process, started early so that a run's ``wandb.init`` does not wait for it."""

from __future__ import annotations

import logging
import os
import threading

# The package's logger, not this module's: users see and filter one "flexcnn.reporters.wandb".
log = logging.getLogger("flexcnn.reporters.wandb")


def start_service_in_background() -> None:
    """Start W&B's service process now, so that wandb.init, after the data are loaded, finds it running.

    wandb.init would start it and wait for it (about 0.2 s of a 3 s trial start-up
    here); started first, the wait overlaps data loading and model building. The
    imports happen on the calling thread: two threads importing at once can deadlock.
    """
    if not (os.environ.get("WANDB_MODE") or "x").strip():
        return  # blank: wandb.setup() would choke on it; the reporter's on_start fixes it before init
    import wandb
    from wandb.sdk.lib.service import service_connection  # noqa: F401 - the import wandb.setup() makes

    def setup() -> None:
        try:
            wandb.setup()
        except Exception as exc:  # wandb.init starts the service itself and reports what goes wrong
            log.debug("early W&B service start failed: %s", exc)

    threading.Thread(target=setup, name="wandb-service-start", daemon=True).start()
