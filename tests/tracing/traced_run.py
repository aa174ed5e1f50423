"""One scripted agent run, traced: run as a program by the tests (inside their namespace).

``python traced_run.py HOME ENDPOINT CAPTURE [BASE_URL]`` runs a goal with the real
``openai`` SDK against the scripted model server (its own, or the one at
``BASE_URL`` that the caller scripted with :func:`script`) and real containers for its
tool calls (a write, a read of a secret the policy denies, a delete that needs
approval and is approved), with ``tracing`` pointed at ``ENDPOINT`` and
``capture_content`` set by ``CAPTURE`` (``0``/``1``); JSON logs go to
``HOME/log.jsonl``, and the result (run id, log path) is printed as JSON.
With ``ENDPOINT`` ``off`` tracing stays off; the OpenTelemetry modules loaded are printed
either way (the scripted server's FastAPI imports the OpenTelemetry API by itself, so the
check that tracing off imports nothing passes ``BASE_URL`` and serves the model elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.agent import Agent, ApprovalWatch
from orchestrator.approvals import AutoApprovalRule, AutoApprover
from orchestrator.config import load_config
from orchestrator.metrics import configure_logging
from orchestrator.platform import Platform

if TYPE_CHECKING:
    from orchestrator.testing import ScriptedModelServer

POLICY = """\
version: 1
default: deny
rules:
  - {name: no-secrets, tools: files.read, when: {arg: path, glob: "secret*"}, decision: deny,
     reason: secrets are off limits}
  - {name: deletes, tools: files.delete, decision: require_approval, reason: deleting needs approval}
  - {name: rest, tools: "*", decision: allow}
"""
SECRET_ARGUMENT = "the-canary-argument-5a1d"
SECRET_GOAL = "Write the canary goal-7c3e file, peek at the secret, delete the file."


def script(server: ScriptedModelServer) -> None:
    """The model's side of the run: a write, a denied read, an approved delete, the answer."""
    from orchestrator.testing import json_reply, text, tool_call, tool_calls

    server.extend(
        tool_calls(tool_call("files__write", {"path": "a.txt", "content": SECRET_ARGUMENT})),
        tool_calls(tool_call("files__read", {"path": "secret.txt"})),
        tool_calls(tool_call("files__delete", {"path": "a.txt"})),
        text("Done: written, refused, deleted."),
        json_reply({"complete": True, "reason": "done"}),
    )


async def main(home: Path, endpoint: str, capture: bool, base_url: str | None) -> dict[str, object]:
    """Run the scripted goal once; what the test checks."""
    (home / "policy.yaml").write_text(POLICY)
    log = (home / "log.jsonl").open("w")
    configure_logging("json", "info", stream=log)
    approve = AutoApprover(
        [AutoApprovalRule(name="ok", tools=["files.delete"], decision="approve")]
    )
    async with AsyncExitStack() as stack:
        if base_url is None:
            from orchestrator.testing import ScriptedModelServer

            server = await stack.enter_async_context(ScriptedModelServer())
            script(server)
            base_url = server.base_url
        lines = [
            f"state_dir: {home}",
            "toolkits: [toolkits.files]",
            "policy: policy.yaml",
            "sandbox: {profiles: {default: {pool_size: 0}}}",
            f"model: {{base_url: '{base_url}', name: test-model, timeout_s: 10}}",
            "memory: {enabled: false}",
        ]
        if endpoint != "off":
            lines.append(
                f"tracing: {{enabled: true, endpoint: '{endpoint}', "
                f"capture_content: {str(capture).lower()}}}"
            )
        (home / "stockade.yaml").write_text("\n".join(lines) + "\n")
        watch = ApprovalWatch([approve])
        loaded = load_config(home / "stockade.yaml", environ={})
        async with (
            Platform.open(loaded, approvers=[watch], pools=False) as platform,
            Agent.open(platform, approvals=watch) as agent,
        ):
            result = await agent.run(SECRET_GOAL, principal="ada")
    log.close()
    return {
        "run_id": result.run_id,
        "status": result.status.value,
        "reason": result.reason,
        "log_path": result.log_path,
        "opentelemetry": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
    }


if __name__ == "__main__":
    home_arg, endpoint_arg, capture_arg = sys.argv[1:4]
    url = sys.argv[4] if len(sys.argv) > 4 else None
    print(json.dumps(asyncio.run(main(Path(home_arg), endpoint_arg, capture_arg == "1", url))))
