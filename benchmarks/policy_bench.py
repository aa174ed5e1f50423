"""Policy decision time against argument size: RE2 (linear) beside Python's ``re`` (before).

The call is the one from the finding: ``shell.run`` under ``policies/default.yaml``
with the command ``"rm -" + "r" * k + "1"``, from 1 KiB up to the largest command the
registry admits (``MAX_ARGUMENT_BYTES`` of JSON arguments). Side by side, in one run:

- ``evaluate``: :func:`orchestrator.policy.evaluate`, the whole decision (the
  rule ``shell-destructive-needs-approval`` runs its three RE2 searches and
  fails, then ``shell`` allows);
- ``re (before)``: the same three patterns searched with Python's ``re``, which
  is what that rule did before. It is quadratic here, so a size runs only while
  its predicted time (the previous size's, times the square of the size ratio)
  stays under ``--re-cap-s``; larger sizes show the prediction instead.

Then a nested quantifier an administrator might write, ``(a+)+$``, on
``"a" * n + "b"`` (exponential in ``re``), and redaction of the largest
argument by the default policy's ``redact`` patterns, before and now.

Run: ``.venv/bin/python benchmarks/policy_bench.py [--re-cap-s 15]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import platform
import re
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from _bench import stop_on_sigterm

from orchestrator.audit import REDACTED, redact
from orchestrator.audit._redact import MAX_REPLACEMENTS
from orchestrator.policy import AnyOf, Effect, Leaf, evaluate, load_policy, parse_policy
from orchestrator.tools import MAX_ARGUMENT_BYTES

POLICY = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"
RULE = "shell-destructive-needs-approval"
# The largest command: MAX_ARGUMENT_BYTES of JSON, less the JSON around it.
LARGEST = MAX_ARGUMENT_BYTES - len(json.dumps({"command": ""}))
KIB = 1024


def timed(action: Callable[[], Any], *, budget_s: float = 0.3, most: int = 1000) -> float:
    """Median seconds of ``action``, repeated until ``budget_s`` is spent (at least 3 times)."""
    samples: list[float] = []
    spent = 0.0
    while len(samples) < 3 or (spent < budget_s and len(samples) < most):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
        spent += samples[-1]
    return statistics.median(samples)


def once(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


Predict = Callable[[int, float, int], float]
"""Seconds a size will take, from the last size run and its seconds."""


def quadratic(last: int, seconds: float, size: int) -> float:
    return seconds * (size / last) ** 2


def exponential(last: int, seconds: float, size: int) -> float:
    # Past 2 ** 64 times the last run the figure means nothing (nor does waiting).
    return math.inf if size - last > 64 else seconds * 2.0 ** (size - last)


def capped(
    sizes: list[int], run: Callable[[int], float], cap_s: float, predict: Predict
) -> list[str]:
    """``run`` each size while its predicted time stays under ``cap_s``, else predict it."""
    cells: list[str] = []
    last: tuple[int, float] | None = None
    for size in sizes:
        predicted = None if last is None else predict(*last, size)
        if predicted is not None and predicted > cap_s:
            shown = "years" if math.isinf(predicted) else f"{predicted:.2g} s"
            cells.append(f"not run (≈ {shown} predicted)")
            continue
        seconds = run(size)
        last = (size, seconds)
        cells.append(f"{seconds * 1e3:,.1f} ms")
    return cells


def decision_table(cap_s: float) -> None:
    policy = load_policy(POLICY)
    (rule,) = [rule for rule in policy.rules if rule.name == RULE]
    assert isinstance(rule.when, AnyOf), rule.when
    patterns: list[re.Pattern[str]] = []
    for leaf in rule.when.any:
        assert isinstance(leaf, Leaf) and leaf.regex is not None, leaf
        patterns.append(re.compile(leaf.regex))
    sizes = [KIB * 2**step for step in range(8)] + [LARGEST]

    def command(size: int) -> str:
        # The flag's letters run into a digit: no word boundary after them, so the rule
        # fails (and Python's re tries every split of the letters first).
        return "rm -" + "r" * (size - 5) + "1"

    def before(size: int) -> float:
        text = command(size)
        return once(lambda: any(pattern.search(text) for pattern in patterns))

    print("### Decision time, `shell.run` `rm -rrr…r1` under the default policy\n")
    print("| command | evaluate (RE2) µs | µs per KiB | re (before) |")
    print("|---:|---:|---:|---:|")
    olds = capped(sizes, before, cap_s, quadratic)
    for size, old in zip(sizes, olds, strict=True):
        arguments = {"command": command(size)}
        decision = evaluate(policy, "shell.run", arguments)
        assert decision.decision is Effect.ALLOW and decision.rule == "shell", decision
        seconds = timed(partial(evaluate, policy, "shell.run", arguments))
        label = f"{size / KIB:,.0f} KiB" if size % KIB == 0 else f"{size:,} B (largest)"
        print(f"| {label} | {seconds * 1e6:,.1f} | {seconds * 1e6 / (size / KIB):.2f} | {old} |")
    print()


def nested_table(cap_s: float) -> None:
    pattern = "(a+)+$"
    policy = parse_policy(
        "version: 1\nrules:\n"
        f"  - {{name: nested, tools: t, when: {{arg: x, regex: '{pattern}'}}, decision: deny}}\n"
    )
    python = re.compile(pattern)
    lengths = [16, 20, 22, 24, 26, 28, 32, 64, LARGEST - 1]

    def before(n: int) -> float:
        text = "a" * n + "b"
        return once(lambda: python.search(text))

    print(f"### An administrator's nested quantifier, `{pattern}` on `'a' * n + 'b'`\n")
    print("| n | evaluate (RE2) µs | re (before) |")
    print("|---:|---:|---:|")
    olds = capped(lengths, before, cap_s, exponential)
    for n, old in zip(lengths, olds, strict=True):
        arguments = {"x": "a" * n + "b"}
        assert evaluate(policy, "t", arguments).decision is Effect.DENY  # default deny
        seconds = timed(partial(evaluate, policy, "t", arguments))
        print(f"| {n:,} | {seconds * 1e6:,.1f} | {old} |")
    print()


def redaction_table(cap_s: float) -> None:
    patterns = load_policy(POLICY).redact
    python = [re.compile(pattern) for pattern in patterns]

    def before(value: str, compiled: list[re.Pattern[str]]) -> str:
        for pattern in compiled:
            value = pattern.sub(REDACTED, value)
        return value

    script = 'for f in *.log; do gzip -9 "$f"; echo done $f; done\n'
    texts = {
        "shell script, no secret": script * (LARGEST // len(script)),
        "`token=abc ` repeated": "token=abc " * (LARGEST // 10),
        "`Bearer ` repeated": "Bearer " * (LARGEST // 7),
    }
    print("### Redaction of the largest argument (default policy's 7 patterns)\n")
    print("| text | now (RE2) ms | re (before) ms | same text as before |")
    print("|---|---:|---:|---|")
    for label, text in texts.items():
        same = redact(text, patterns) == before(text, python)
        now = timed(partial(redact, text, patterns), budget_s=1.0, most=20)
        old = timed(partial(before, text, python), budget_s=1.0, most=20)
        verdict = "yes" if same else f"from match {MAX_REPLACEMENTS + 1} on, one {REDACTED}"
        print(f"| {label} | {now * 1e3:,.1f} | {old * 1e3:,.1f} | {verdict} |")
    # A pattern whose every short match needs a look to the end of the text:
    # both engines pay a pass per match; the replacement cap bounds it now.
    slow = "a(?:.*z)?"
    text = "a" * LARGEST
    now = timed(lambda: redact(text, [slow]), budget_s=1.0, most=5)
    sizes = [LARGEST // 64, LARGEST // 16, LARGEST // 4, LARGEST]
    olds = capped(sizes, lambda n: once(lambda: re.sub(slow, "", "a" * n)), cap_s, quadratic)
    verdict = f"from match {MAX_REPLACEMENTS + 1} on, one {REDACTED}"
    print(f"| `{slow}` on `'a' * {LARGEST:,}` | {now * 1e3:,.1f} | {olds[-1]} | {verdict} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--re-cap-s", type=float, default=15.0, help="Longest single run of Python's re."
    )
    options = parser.parse_args()
    print(
        f"Python {platform.python_version()}, google-re2 "
        f"{importlib.metadata.version('google-re2')}, {platform.machine()}; "
        f"largest command {LARGEST:,} characters (MAX_ARGUMENT_BYTES {MAX_ARGUMENT_BYTES:,})\n"
    )
    decision_table(options.re_cap_s)
    nested_table(options.re_cap_s)
    redaction_table(options.re_cap_s)


if __name__ == "__main__":
    stop_on_sigterm()
    main()
