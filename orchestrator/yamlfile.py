"""YAML in, a validated model out, or a ConfigError naming file, line, field and expectation.

Every configuration file of the project (``stockade.yaml``, policies, approvers,
sandbox profiles) is read here, so each gets the same guarantees:

- anchors and aliases are refused (a "billion laughs" document of nested
  aliases would otherwise expand to gigabytes), and so is a document larger
  than :data:`MAX_DOCUMENT_BYTES` or nested deeper than :data:`MAX_DEPTH` — all
  with the line where it happens;
- a value its tag cannot make (``!!float abc``, a 13th month, a ``!!python``
  tag, a list as a key) is an error with its line, not a traceback;
- a repeated key is an error, not a silent override;
- a pydantic error's ``loc`` is walked through PyYAML's node tree to find the
  line, and through the model's types to drop union tags (``leaf``, ``all`` …)
  from the field path and to list the keys a mapping accepts when one is unknown.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, Tag

from orchestrator.errors import ConfigError
from orchestrator.strict import LocatedValueError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "compose_yaml",
    "construct_yaml",
    "line_of",
    "load_yaml_model",
    "parse_yaml_model",
    "read_yaml_text",
]

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_EXTRA_PROBLEMS = 5
MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest configuration document read (a policy of thousands of rules fits many times)."""
MAX_DEPTH = 100
"""Deepest nesting of collections read. PyYAML composes and constructs recursively, so a
megabyte of ``[[[[…`` would otherwise stop the reader with a RecursionError; real files
nest a handful of levels."""


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses anchors and aliases before composing anything they expand
    to, and nesting deeper than :data:`MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise _Refused(
                f"YAML {kind}{anchor} is not allowed: anchors and aliases are refused in "
                "configuration files",
                event.start_mark,
            )
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _Constructor(yaml.SafeLoader):
    """A safe loader whose values that cannot be made say which node they came from."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            # A tag's constructor failed (int("abc"), a 13th month): PyYAML says nowhere.
            raise _Refused(f"cannot read this value: {exc}", node.start_mark) from exc


def _too_large(source: str, line: int) -> ConfigError:
    """The error of a document past :data:`MAX_DOCUMENT_BYTES`, at the line where it passes."""
    return ConfigError(
        f"the document is larger than {MAX_DOCUMENT_BYTES} bytes; refused from this line on",
        file=source,
        line=line,
    )


def compose_yaml(text: str, source: str) -> yaml.Node | None:
    """The node tree of ``text`` (None when empty); refuses oversized documents and aliases."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise _too_large(source, text.count("\n", 0, MAX_DOCUMENT_BYTES) + 1)
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _not_valid(exc, source) from exc
    finally:
        loader.dispose()


def _not_valid(exc: yaml.YAMLError, source: str) -> ConfigError:
    """PyYAML's error as a :class:`ConfigError` with its line in ``source``, if it knows one."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(
        f"not valid YAML: {problem}", file=source, line=mark.line + 1 if mark else None
    )


def construct_yaml(node: yaml.Node, *, source: str) -> Any:
    """The Python value of a composed node tree; a value that cannot be made raises a
    :class:`ConfigError` with its line in ``source``."""
    loader = _Constructor("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _not_valid(exc, source) from exc
    finally:
        loader.dispose()


def _reject_duplicate_keys(root: yaml.Node, source: str) -> None:
    """A repeated key would silently override the first one; refuse it."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:  # defensive: aliases (refused) would share nodes
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    raise ConfigError(
                        f"duplicate key {key.value!r} (first at line {first[key.value]})",
                        file=source,
                        line=line,
                    )
                first[key.value] = line
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


# --- from a pydantic location to a field path, a model and a line ---------------------------


def _strip(annotation: Any) -> Any:
    """Drop ``Annotated`` wrappers and ``None`` from an optional."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _tagged_members(annotation: Any) -> dict[str, Any]:
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members: dict[str, Any] = {}
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Annotated:
            inner, *metadata = typing.get_args(arg)
            members.update({meta.tag: inner for meta in metadata if isinstance(meta, Tag)})
    return members


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _resolve(root: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """The location without union tags, and the model holding its last step."""
    path: list[str | int] = []
    annotation: Any = root
    holder: type[BaseModel] | None = None
    for step in loc:
        annotation = _strip(annotation)
        members = _tagged_members(annotation)
        if isinstance(step, str) and step in members:
            annotation = members[step]
            continue
        path.append(step)
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        holder = annotation if is_model else None
        if holder is not None and isinstance(step, str):
            annotation = _field_type(holder, step)
        elif isinstance(step, int) and typing.get_origin(annotation) in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            annotation = None
    return tuple(path), holder


def _line(root: yaml.Node, path: Loc) -> int:
    """The line of the deepest node the path reaches (a key's line, for a mapping entry)."""
    node, line = root, root.start_mark.line + 1
    for step in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                break
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(path: Loc) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


# --- from a pydantic error to a sentence ----------------------------------------------------

_EXPECTED = {
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "list_type": "a list",
    "string_type": "a string",
    "too_short": "at least {min_length} item(s)",
    "string_too_short": "at least {min_length} character(s)",
    "greater_than": "a number greater than {gt}",
    "greater_than_equal": "a number of at least {ge}",
    "less_than_equal": "a number of at most {le}",
}


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) <= 40:
        return text
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else text


def _choices(expected: str) -> str:
    """``"'allow', 'deny' or 'x'"`` as ``allow, deny, x``."""
    return ", ".join(item.strip("'") for item in re.split(r", | or ", expected))


def _sentence(error: Any, holder: type[BaseModel] | None) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        unknown = str(error["loc"][-1])
        if holder is None:
            return f"unknown field {unknown!r}"
        allowed = _keys(holder)
        close = difflib.get_close_matches(unknown, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field {unknown!r}{hint}; expected one of {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("enum", "literal_error"):
        expected = f"one of {_choices(ctx['expected'])}"
    elif kind in _EXPECTED:
        expected = _EXPECTED[kind].format(**ctx)
    else:
        return f"{error['msg']}, got {_shown(error['input'])}"
    return f"expected {expected}, got {_shown(error['input'])}"


def _problems(
    exc: pydantic.ValidationError, model: type[BaseModel], root: yaml.Node
) -> list[tuple[int, str, str]]:
    """(line, field, sentence) for each error, the most telling first."""
    errors = exc.errors()
    # A typo'd key shows up twice: as an unknown key and as a missing one. The
    # unknown key names the mistake; the missing one is noise beside it.
    typo_parents = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "extra_forbidden"}
    problems = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "missing" and loc[:-1] in typo_parents:
            continue
        located = error.get("ctx", {}).get("error")
        if isinstance(located, LocatedValueError):
            loc += located.loc
        path, holder = _resolve(model, loc)
        rank = 0 if error["type"] == "extra_forbidden" else 1
        problems.append((rank, _line(root, path), _dotted(path), _sentence(error, holder)))
    problems.sort(key=lambda problem: problem[:2])
    return [problem[1:] for problem in problems]


def parse_yaml_model(text: str, model: type[M], *, source: str) -> M:
    """Validate YAML ``text`` as ``model``; any mistake raises a :class:`ConfigError`."""
    root = compose_yaml(text, source)
    if root is None:
        raise ConfigError("the file is empty", file=source, line=1)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"expected a mapping ({model.__name__}) at the top level",
            file=source,
            line=root.start_mark.line + 1,
        )
    _reject_duplicate_keys(root, source)
    try:
        return model.model_validate(construct_yaml(root, source=source))
    except pydantic.ValidationError as exc:
        (line, field, sentence), *others = _problems(exc, model, root)
        more = "".join(
            f"\n  also {source}:{o[0]}: {o[1]}: {o[2]}" for o in others[:_MAX_EXTRA_PROBLEMS]
        )
        if len(others) > _MAX_EXTRA_PROBLEMS:
            more += f"\n  and {len(others) - _MAX_EXTRA_PROBLEMS} more"
        raise ConfigError(sentence + more, file=source, line=line, field=field) from exc


def read_yaml_text(path: str | Path, *, what: str) -> str:
    """The text of a configuration file, read no further than the size limit allows.

    ``what`` names the kind of file in a read error ("policy", "approvers file").
    """
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc}", file=str(path)) from exc
    # Measured in bytes, here where they are read: the text of a megabyte of "é" is
    # half a million characters, which passes compose_yaml's measure, and parsing
    # what was read would silently drop the rest of the file.
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _too_large(str(path), raw.count(b"\n", 0, MAX_DOCUMENT_BYTES) + 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read {what}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}: {exc.reason})",
            file=str(path),
            line=raw.count(b"\n", 0, exc.start) + 1,
        ) from exc


def load_yaml_model(path: str | Path, model: type[M], *, what: str) -> M:
    """Read and validate the YAML file ``path`` as ``model``.

    Raises :class:`ConfigError` like ``policies/x.yaml:12:
    rules[3].decision: expected one of allow, deny, require_approval, got 'alow'``.
    """
    return parse_yaml_model(read_yaml_text(path, what=what), model, source=str(path))


def line_of(path: str | Path, loc: Loc) -> int | None:
    """The line of field ``loc`` in the YAML file ``path`` (for errors found after loading)."""
    try:
        root = compose_yaml(read_yaml_text(path, what="file"), str(path))
    except ConfigError:
        return None
    return None if root is None else _line(root, loc)
