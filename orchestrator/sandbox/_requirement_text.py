"""One Python requirement as the images take it: a name and versions from the index, nothing pip
would read as more.

Requirements reach pip through a requirements file, and pip reads more than
requirements there: a line starting with ``-`` is an option (``--index-url``,
``-r /etc/shadow``), ``${NAME}`` is replaced by the host's environment variable
(``foo===${AWS_SECRET_ACCESS_KEY}`` would put the secret into pip's "no
matching distribution" error, shown to whoever reads the build's output), a
trailing backslash joins the next line, `` #`` starts a comment. packaging's
parser accepts all of that after ``===`` (any text but blanks), so each
requirement is checked here before it is written to one: an image spec's
(``stockade.yaml``) and a toolkit's ``requirements.txt`` lines alike.
"""

from __future__ import annotations

import re

from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["check_requirement"]

_PIP_SYNTAX = re.compile(r"[$\\#]|[^\x20-\x7e]")
"""What a requirements file gives a meaning of its own (environment variables, line
continuation, comments), and every control or non-ASCII character (no name or version
has one; a terminal would act on an escape)."""


def check_requirement(text: str, *, markers: bool) -> Requirement:
    """``text`` parsed, or a :class:`ValueError` saying why it is not a plain requirement.

    Refused: an option, pip's own syntax (``$``, ``\\``, ``#``), control and
    non-ASCII characters, a URL, and environment markers unless ``markers``.
    """
    if text.lstrip().startswith("-"):
        # A requirements file would read it as an option (--index-url...).
        raise ValueError(f"{text!r} is an option, not a requirement")
    unsafe = _PIP_SYNTAX.search(text)
    if unsafe:
        why = (
            "pip would read it as an environment variable, a line continuation or a comment"
            if unsafe.group() in "$\\#"
            else "a control or non-ASCII character"
        )
        raise ValueError(f"{text!r}: {unsafe.group()!r} is not allowed in a requirement ({why})")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a requirement: {exc}") from exc
    if requirement.url:
        raise ValueError(f"{text!r}: name a package of the index, not a URL")
    if requirement.marker is not None and not markers:
        raise ValueError(f"{text!r}: environment markers are not supported here")
    return requirement
