"""Test code run in several fresh processes at once, as several orchestrator processes would.

Spawned, not forked: a child starts from nothing, so it shares no state with
the test's process (no inherited connection, lock or thread) — what it shares
with the others, it shares through what is under test (a file, a database,
a server).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

BOUND_S = 60.0
"""Every wait of the processes and of their test is bounded by this."""


def in_processes(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*args, start, results)`` once per argument tuple, each in a fresh process.

    ``start`` is a barrier that releases them all at once (``start.wait(timeout=BOUND_S)``);
    each puts one ``(label, answer)`` on ``results``. Returns the answers, in the order
    they came.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(arguments))
    results: Queue[tuple[str, Any]] = context.Queue()
    processes = [context.Process(target=target, args=(*args, start, results)) for args in arguments]
    try:
        for process in processes:
            process.start()
        answers = [results.get(timeout=BOUND_S) for _ in processes]
        for process in processes:
            process.join(timeout=BOUND_S)
            assert process.exitcode == 0
        return [answer for _, answer in answers]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=BOUND_S)
