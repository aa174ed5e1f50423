"""Putting a streamed reply (server-sent chunks) back together into one turn.

Tool calls arrive in pieces: OpenAI sends each call's id and name once and
its arguments in fragments, all keyed by ``index``. Other servers send a
whole call in one chunk, repeat the name in every chunk, or leave ``index``
out; each is handled. Chunks are read as raw dictionaries, like a
non-streamed body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.agent._model_reply import TokenUsage, as_arguments, as_name, parse_usage
from orchestrator.agent._model_wire import ParsedTurn

__all__ = ["StreamAccumulator"]


@dataclass(kw_only=True)
class _PartialCall:
    id: Any = None
    name: str = ""
    arguments: str = ""


@dataclass(kw_only=True)
class StreamAccumulator:
    """Collects a streamed turn chunk by chunk; :meth:`turn` gives the result."""

    on_text: Callable[[str], None] | None = None
    """Called with each fragment of text as it arrives."""
    chunks: int = 0
    _content: list[str] = field(default_factory=list)
    _calls: list[_PartialCall] = field(default_factory=list)
    _by_index: dict[int, _PartialCall] = field(default_factory=dict)
    _finish_reason: str | None = None
    _usage: TokenUsage | None = None
    _model: str | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        """Take in one chunk (the decoded JSON of one ``data:`` event)."""
        self.chunks += 1
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        usage = parse_usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return
        choice = choices[0]
        if isinstance(choice.get("finish_reason"), str):
            self._finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._content.append(text)
            if self.on_text is not None:
                self.on_text(text)
        pieces = delta.get("tool_calls")
        if isinstance(pieces, list):
            for piece in pieces:
                if isinstance(piece, Mapping):
                    self._add_piece(piece)

    def _add_piece(self, piece: Mapping[str, Any]) -> None:
        call = self._slot(piece)
        piece_id = piece.get("id")
        if isinstance(piece_id, str) and piece_id and call.id is None:
            call.id = piece_id
        function = piece.get("function")
        if not isinstance(function, Mapping):
            return
        name = as_name(function.get("name"))
        # Some servers repeat the whole name in every chunk; OpenAI sends it once.
        if name and name != call.name:
            call.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments += arguments
        elif arguments is not None:
            call.arguments = as_arguments(arguments)

    def _slot(self, piece: Mapping[str, Any]) -> _PartialCall:
        index = piece.get("index")
        piece_id = piece.get("id")
        if isinstance(index, int) and not isinstance(index, bool):
            known = self._by_index.get(index)
            # A different id under a known index is a new call: some servers
            # (older Ollama) give every call index 0.
            if known is None or (isinstance(piece_id, str) and known.id not in (None, piece_id)):
                self._by_index[index] = _PartialCall()
                self._calls.append(self._by_index[index])
            return self._by_index[index]
        # No index: a piece continues the call with its id, or the last call
        # when it carries no id; a new id starts a new call.
        for call in reversed(self._calls):
            if piece_id is None or call.id == piece_id:
                return call
        self._calls.append(_PartialCall())
        return self._calls[-1]

    @property
    def finished(self) -> bool:
        """Whether a chunk said why the turn ended (``finish_reason``).

        Every server sends one as the turn's last choice; a stream that ends
        without it was cut short (a proxy's timeout, a server restarting), and
        what came so far is only part of the answer.
        """
        return self._finish_reason is not None

    def turn(self) -> ParsedTurn:
        """The turn the chunks so far make up."""
        return ParsedTurn(
            content="".join(self._content) if self._content else None,
            calls=tuple((call.id, call.name, call.arguments) for call in self._calls),
            finish_reason=self._finish_reason,
            usage=self._usage,
            model=self._model,
        )
