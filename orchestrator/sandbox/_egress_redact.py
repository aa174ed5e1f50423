"""Secrets out of the responses of bound hosts, on their way back into the sandbox.

A server may reflect what it received: an echo endpoint, an error page that
quotes the request, a redirect URL. Every form of the secret listed here is
replaced by ``[REDACTED]`` in response headers and bodies before the sandbox
reads them, across chunk boundaries (the tail of each chunk that could start a
form is held back until the next chunk or the end):

- the secret itself;
- URL-encoded, by any encoder: each byte but a letter or digit may be
  percent-encoded or left as it is (``quote`` keeps ``/``, ``encodeURIComponent``
  keeps ``!*'()``, PHP's ``urlencode`` encodes ``~``), in either hex case, a
  space also as ``+``;
- base64 (standard and URL-safe alphabets), at each of the three alignments
  the secret can have inside a longer encoded text: the characters that depend
  only on the secret's bytes.

What this cannot catch (documented in the README): a secret transformed in any
other way (hex, reversed, split into pieces, hashed, encrypted, compressed —
responses are requested uncompressed, and a compressed one is refused), and a
secret shorter than the configured minimum, which is refused at start.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MARK", "StreamRedactor", "secret_forms"]

MARK = b"[REDACTED]"
"""What a secret is replaced with."""


def _base64_forms(secret: bytes) -> set[bytes]:
    forms: set[bytes] = set()
    for offset in range(3):
        padded = b"\0" * offset + secret
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(padded).rstrip(b"=")
            # Characters that depend on the padding before, or on the bytes after (the
            # last partial group), say nothing certain: keep those the secret fixes.
            first = -(-offset * 8 // 6)
            last = (offset + len(secret)) * 8 // 6
            forms.add(encoded[first:last])
    return forms


def _url_encoded(secret: bytes) -> tuple[bytes, int]:
    """A pattern for ``secret`` URL-encoded by any encoder, and its longest match.

    Encoders disagree on what they leave alone (``/``, ``~``, ``!``…), so every
    byte but a letter or digit is matched both as it is and as ``%XX``.
    """
    parts: list[bytes] = []
    longest = 0
    for byte in secret:
        char = bytes([byte])
        if char.isalnum():
            parts.append(char)
            longest += 1
            continue
        high, low = (f"[{digit}{digit.lower()}]".encode() for digit in f"{byte:02X}")
        options = [re.escape(char), b"%" + high + low]
        if char == b" ":
            options.append(rb"\+")
        parts.append(b"(?:" + b"|".join(options) + b")")
        longest += 3
    return b"".join(parts), longest


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings to hide for ``secret``."""
    raw = secret.encode()
    forms = {raw, *_base64_forms(raw)}
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms.add(encoded.encode())
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded).encode())
    return {form for form in forms if form}


class StreamRedactor:
    """Replaces every form of some secrets in a stream of chunks; feed, then finish."""

    def __init__(self, secrets: Iterable[str]) -> None:
        secrets = tuple(secrets)
        alternatives = {
            (re.escape(form), len(form)) for secret in secrets for form in secret_forms(secret)
        }
        alternatives |= {_url_encoded(secret.encode()) for secret in secrets if secret}
        # Longest first: at one position, the longer of two forms that both start there.
        ordered = sorted(alternatives, key=lambda alternative: -alternative[1])
        self._pattern = re.compile(b"|".join(p for p, _ in ordered)) if ordered else None
        # A form that starts in one chunk may end in the next: this much is held back.
        self._keep = max((longest for _, longest in ordered), default=1) - 1
        self._held = b""
        self.replaced = 0
        """How many occurrences were replaced so far."""

    def feed(self, chunk: bytes) -> bytes:
        """The part of the stream that is certain now, with secrets replaced."""
        if self._pattern is None:
            return chunk
        data = self._held + chunk
        # A form may start in the last bytes and end in the next chunk; a match starting
        # there may also be the prefix of a longer form. Both are decided with more data.
        undecided = len(data) - self._keep
        out: list[bytes] = []
        position = 0
        keep_from = max(undecided, 0)
        for match in self._pattern.finditer(data):
            if match.start() >= undecided:
                keep_from = match.start()
                break
            out.append(data[position : match.start()])
            out.append(MARK)
            position = match.end()
            self.replaced += 1
        keep_from = max(position, keep_from)
        out.append(data[position:keep_from])
        self._held = data[keep_from:]
        return b"".join(out)

    def finish(self) -> bytes:
        """The rest of the stream."""
        if self._pattern is None:
            return b""
        data, self._held = self._held, b""
        replaced, count = self._pattern.subn(MARK, data)
        self.replaced += count
        return replaced

    def redact(self, data: bytes) -> bytes:
        """One whole value (a header), redacted."""
        if self._pattern is None:
            return data
        replaced, count = self._pattern.subn(MARK, data)
        self.replaced += count
        return replaced
