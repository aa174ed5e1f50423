"""Which sandbox code a process runs, so that hosts and orchestrators can tell they agree.

A sandbox host's actor is detached: it keeps running the code of the
orchestrator that started it, whatever is installed after, until its node
restarts or someone replaces it. An orchestrator upgraded since would send
calls to code older (or newer) than its own — a fix of the host's checks
included — and nothing would say so. Both sides therefore compute a
fingerprint of the sources they loaded and compare them at registration.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["code_fingerprint"]

_PACKAGE = Path(__file__).resolve().parent.parent


def code_fingerprint(package: Path = _PACKAGE) -> str:
    """A digest of every Python source of ``package`` (the ``orchestrator`` package).

    All of it, not only ``sandbox/``: a host also runs what the sandbox layer
    imports (errors, strict models, run ids, lock files, metrics, assets), and a
    list of those would go stale unnoticed. An upgrade of Stockade is a new
    fingerprint, so its hosts are replaced with it. Read from disk, so call it
    once, when the code is imported, not later (the files may have changed under
    the process).
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).parts
        # Not _assets/: what runs in the containers (the runner) is the images' part,
        # checked by their tags; a link in a checkout, a directory in a wheel.
        if "__pycache__" in relative or relative[0] == "_assets":
            continue
        content = path.read_bytes()
        name = path.relative_to(package).as_posix().encode()
        # Each part with its length: no two file sets hash alike by moving bytes.
        for part in (name, content):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]
