"""The ``lagsplit`` console script: imports the command line (typer, rich) under its own
Ctrl-C guard, so an interrupt at any moment of start-up says what was done."""
from __future__ import annotations

import sys
import time

STARTED = time.monotonic()
"""When the command started (``time.monotonic``, taken as its first module loads): a run's
output records how long after it its first frame arrived (``startup_s``)."""

STOPPED_AT_START = "stopped by SIGINT before the first frame; nothing written"


def main() -> None:
    try:
        from .cli import main as run_cli
    except KeyboardInterrupt:
        print(STOPPED_AT_START, file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    run_cli()
