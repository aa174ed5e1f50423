"""What the benchmark scripts share: being stopped cleanly, and their percentiles.

Imported by the scripts as ``_bench`` (their own directory is first on
``sys.path`` when run as ``.venv/bin/python benchmarks/NAME.py``).
"""

from __future__ import annotations

import os
import signal


def stop_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``, a CI runner) stop the script as Ctrl-C does.

    The default SIGTERM ends the process at once, leaving its pooled
    containers to the next start's reaper. Raising KeyboardInterrupt from the
    handler is no better: it lands wherever the loop happens to be. A SIGINT
    sent to itself is what ``asyncio.run`` handles: it cancels the main task,
    and every ``async with Platform.open(...)`` removes its sandboxes on the
    way out (a script with no loop gets KeyboardInterrupt, as from Ctrl-C).
    """
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os.kill(os.getpid(), signal.SIGINT))


def percentiles(
    samples: list[float], *, scale: float = 1000.0, shares: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> tuple[float, ...]:
    """The nearest-rank values of ``samples`` (seconds) at ``shares``, times ``scale``.

    ``scale`` 1000 gives milliseconds (the default), 1e6 microseconds.
    """
    ordered = sorted(samples)
    last = len(ordered) - 1
    return tuple(ordered[min(last, round(share * last))] * scale for share in shares)
