"""Image artifacts shown to a model that reads images, in one user message per batch.

Chat Completions tool messages carry text only. When the model is
configured as accepting images (``model.accepts_images``), the raster images
(PNG, JPEG, GIF, WebP — never SVG, which is active content) that a batch of
tool calls left as artifacts go to the model in one user message after the
batch's tool messages, each as a data URL, the text citing the
``tool_call_id`` each came from. Every tool message already names its
artifacts in one line each, so a model that does not read images (or an
image past the caps below) loses nothing but the pixels.

Images are the first thing summarisation drops: they are the largest part
of a conversation and the tool messages keep their description.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.artifacts import IMAGE_TYPES, Artifact

__all__ = [
    "IMAGE_MARK",
    "IMAGE_TOKENS",
    "MAX_IMAGES",
    "MAX_IMAGES_BYTES",
    "MAX_IMAGE_BYTES",
    "ShownImage",
    "image_message",
    "is_image_message",
    "pick",
    "showable",
]

IMAGE_MARK = "[Images from the tool calls above]"
"""How the text of an image message begins (how summarisation finds it)."""

IMAGE_TOKENS = 1_000
"""Estimated tokens of one image (servers bill ~85-1 500 by size and detail)."""

MAX_IMAGES = 8
"""Most images in one message; the rest stay text lines in their tool messages."""

MAX_IMAGE_BYTES = 4 << 20
"""Largest image sent (its data URL is a third larger, and rides in every later request)."""

MAX_IMAGES_BYTES = 8 << 20
"""Most image bytes in one message (the run's checkpoint carries the message too)."""


@dataclass(frozen=True, kw_only=True)
class ShownImage:
    """One image for the model: the call it came from and its bytes."""

    tool_call_id: str
    """The model's id for the call (the one its tool message carries)."""
    artifact: Artifact
    """The artifact."""
    data: bytes
    """Its bytes, as stored."""


def pick(candidates: Sequence[tuple[str, Artifact]]) -> list[tuple[str, Artifact]]:
    """The (tool_call_id, artifact) pairs to show, in order, within the caps."""
    chosen: list[tuple[str, Artifact]] = []
    total = 0
    for tool_call_id, artifact in candidates:
        if len(chosen) == MAX_IMAGES:
            break
        if showable(artifact) and total + artifact.size <= MAX_IMAGES_BYTES:
            chosen.append((tool_call_id, artifact))
            total += artifact.size
    return chosen


def showable(artifact: Artifact) -> bool:
    """Whether ``artifact`` may be shown as an image (a raster type, within the size cap)."""
    return artifact.media_type in IMAGE_TYPES and artifact.size <= MAX_IMAGE_BYTES


def image_message(images: Sequence[ShownImage]) -> dict[str, Any]:
    """The user message showing ``images``, citing the ``tool_call_id`` of each."""
    cited = "; ".join(
        f"{image.artifact.name} (artifact {image.artifact.id}) from tool_call_id "
        f"{image.tool_call_id}"
        for image in images
    )
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"{IMAGE_MARK} {cited}"}]
    for image in images:
        encoded = base64.b64encode(image.data).decode("ascii")
        url = f"data:{image.artifact.media_type};base64,{encoded}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": parts}


def is_image_message(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` is one :func:`image_message` made."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list) or not content:
        return False
    first = content[0]
    return isinstance(first, dict) and str(first.get("text", "")).startswith(IMAGE_MARK)
