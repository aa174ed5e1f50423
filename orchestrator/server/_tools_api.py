"""``/v1/tools`` and ``/v1/tool-calls``: the tools, and calls through the gateway.

For agent frameworks that run their own loop and use Stockade only to
execute tools. A call is a :class:`~orchestrator.tools.ToolCall` as the
model made it; the server sets its principal from the token, claims its run
id for that principal, and hands it to the gateway, which checks, gates,
runs and audits it. The answer is the gateway's
:class:`~orchestrator.tools.ToolResult`, whatever happened to the call: the
HTTP status says whether the server handled the request, the result's
``status`` how the call ended (``denied``, ``rate_limited``… are results
for the model to read, not HTTP errors).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import Field

from orchestrator.runid import RUN_ID_PATTERN
from orchestrator.server._auth import require
from orchestrator.server._problems import ProblemCode, ProblemError, problem_responses
from orchestrator.server._roles import Identity, Permission
from orchestrator.server._runs_api import claim_run
from orchestrator.server._state import State
from orchestrator.strict import StrictModel
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

__all__ = ["FunctionDefinition", "OpenAITool", "ToolCallRequest", "ToolList", "router"]

router = APIRouter(prefix="/v1", tags=["tools"])
"""The tools endpoints."""


class FunctionDefinition(StrictModel):
    """A function as OpenAI's chat-completions API describes it."""

    name: str
    """The OpenAI name of the tool (``toolkit__function``); calls may use either spelling."""
    description: str
    """What the model is told the tool does."""
    parameters: dict[str, Any]
    """JSON Schema of the arguments."""
    strict: bool
    """Whether the schema qualifies for OpenAI's strict mode."""


class OpenAITool(StrictModel):
    """A tool in OpenAI's function-calling format, ready for a ``tools`` list."""

    type: Literal["function"]
    """Always ``function``."""
    function: FunctionDefinition
    """The function."""


class ToolList(StrictModel):
    """The configured tools."""

    tools: tuple[OpenAITool, ...]
    """Every tool, in OpenAI's function-calling format, sorted by name."""


class ToolCallRequest(ToolCall):
    """A tool call as the model made it, with the run it belongs to."""

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    """The run the call belongs to (its workspace, rate limits and approvals). The first
    principal to use a run id owns it; other principals are refused (403)."""
    principal: str | None = None
    """Ignored: a call acts for its token's principal, whatever the body says."""


_CALL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The call's result, whatever its status. A call that needs approval "
        "keeps the request open until someone decides (or the policy's approval timeout): set "
        "the client's read timeout above the policy's approval_timeout_s. A retry with the "
        "same run id, call id, tool and arguments while the call runs joins it.",
        "headers": {
            "Retry-After": {
                "description": "For status rate_limited: seconds until a retry can succeed.",
                "schema": {"type": "integer"},
            }
        },
    },
    **problem_responses(401, 403, 409, 413, 422),
}


@router.get("/tools", response_model=ToolList, responses=problem_responses(401, 403))
async def list_tools(
    state: State,
    _identity: Annotated[Identity, Depends(require(Permission.READ_TOOLS))],
) -> ToolList:
    """The tools, in OpenAI's function-calling format."""
    return ToolList.model_validate({"tools": state.platform.gateway.tools()})


@router.get("/tools/{name}", response_model=OpenAITool, responses=problem_responses(401, 403, 404))
async def get_tool(
    name: str,
    state: State,
    _identity: Annotated[Identity, Depends(require(Permission.READ_TOOLS))],
) -> OpenAITool:
    """One tool, by ``toolkit.function`` or by its OpenAI name."""
    spec = state.platform.registry.get(name)
    if spec is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no tool {name!r}")
    return OpenAITool.model_validate(spec.openai())


@router.post("/tool-calls", response_model=ToolResult, responses=_CALL_RESPONSES)
async def call_tool(
    body: ToolCallRequest,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.CALL_TOOLS))],
) -> Response:
    """Call a tool through the gateway, as the token's principal; answer its result."""
    if not await claim_run(state, body.run_id, identity):
        raise ProblemError(
            403,
            ProblemCode.RUN_OWNED_BY_ANOTHER,
            f"run {body.run_id} belongs to another principal; use a run id of your own",
        )
    call = ToolCall(
        id=body.id,
        name=body.name,
        arguments=body.arguments,
        run_id=body.run_id,
        principal=identity.principal,
    )
    result = await state.calls.call(call)
    headers = None
    if result.status is ToolStatus.RATE_LIMITED and result.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(result.retry_after_s)))}
    # Serialised once, by the model itself (FastAPI would validate it again).
    return Response(result.model_dump_json(), headers=headers, media_type="application/json")
