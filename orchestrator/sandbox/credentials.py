"""Credentials the egress proxy adds to a sandbox's requests, so the sandbox never holds them.

An organisation declares secrets in ``stockade.yaml`` and binds each to a
(sandbox profile, host) pair, optionally to principals, with the header that
carries it (``Authorization: Bearer {secret}``). For each call, the
:class:`CredentialBindings` pick the credentials of its profile and principal;
they travel with the call's request to the proxy serving its container (in
memory, for that call only) and never into the container, the tool's arguments,
the model's context or the audit log, which names the secret, never its value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "MIN_SECRET_LENGTH",
    "Credential",
    "CredentialBinding",
    "CredentialBindings",
    "by_destination",
]

MIN_SECRET_LENGTH = 8
"""Shorter secrets are refused: their encoded forms would be too short to redact from
responses without also hiding ordinary text."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """One secret as the proxy sends it to one host."""

    name: str
    """The secret's name in the configuration: what the audit log and metrics show."""
    host: str
    """The host it is sent to (lower case, no trailing dot)."""
    port: int
    """The port (HTTPS) it is sent on."""
    header: str
    """The request header that carries it, e.g. ``Authorization``."""
    template: str
    """The header's value with ``{secret}`` where the secret goes."""
    value: str = field(repr=False)
    """The secret itself; never printed, logged or recorded."""
    upstream_ca: bytes | None = None
    """PEM certificates the proxy trusts for this host instead of the system's trust store
    (an internal API whose certificate a private CA issued); None: the system's."""

    def header_value(self) -> str:
        """The header's value with the secret in it."""
        return self.template.replace("{secret}", self.value)


@dataclass(frozen=True, kw_only=True, slots=True)
class CredentialBinding:
    """A credential, the profile whose sandboxes get it, and the principals it is for."""

    profile: str
    """The sandbox profile."""
    credential: Credential
    """What is sent, to which host."""
    principals: tuple[str, ...] | None = None
    """Principal globs; None: every caller (a call without a principal included)."""

    def covers(self, profile: str, principal: str | None) -> bool:
        """Whether a call of ``principal`` in ``profile`` gets this credential."""
        if profile != self.profile:
            return False
        if self.principals is None:
            return True
        return principal is not None and any(
            fnmatch.fnmatchcase(principal, pattern) for pattern in self.principals
        )


class CredentialBindings:
    """Every binding of the configuration; answers which credentials a call gets."""

    def __init__(self, bindings: Iterable[CredentialBinding] = ()) -> None:
        self._bindings = tuple(bindings)
        self._profiles = frozenset(binding.profile for binding in self._bindings)

    @property
    def profiles(self) -> frozenset[str]:
        """The profiles some credential is bound to (their sandboxes trust the proxy's CA)."""
        return self._profiles

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every bound host, sorted (the proxy's CA is constrained to these names)."""
        return tuple(sorted({binding.credential.host for binding in self._bindings}))

    @property
    def secrets(self) -> tuple[str, ...]:
        """The bound secrets' names, sorted."""
        return tuple(sorted({binding.credential.name for binding in self._bindings}))

    def __bool__(self) -> bool:
        return bool(self._bindings)

    def for_call(self, profile: str, principal: str | None) -> tuple[Credential, ...]:
        """The credentials a call of ``principal`` in ``profile`` gets: at most one per host.

        When several bindings name one host for the call, the first configured wins.
        """
        if profile not in self._profiles:
            return ()
        chosen: dict[tuple[str, int], Credential] = {}
        for binding in self._bindings:
            if binding.covers(profile, principal):
                credential = binding.credential
                chosen.setdefault((credential.host, credential.port), credential)
        return tuple(chosen.values())


def by_destination(credentials: Sequence[Credential]) -> dict[tuple[str, int], Credential]:
    """``credentials`` keyed by (host, port), as the proxy looks them up."""
    return {(credential.host, credential.port): credential for credential in credentials}
