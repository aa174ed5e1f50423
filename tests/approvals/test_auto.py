"""Rule-driven approvals with the policy's condition matcher, and the Approver protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStore,
    Approver,
    AutoApprovalRule,
    AutoApprover,
)
from orchestrator.errors import ConfigError, UsageError
from orchestrator.policy import parse_yaml_model

RULES = [
    AutoApprovalRule.model_validate(rule)
    for rule in (
        {
            "name": "build-dir",
            "tools": "shell.run",
            "when": {"arg": "command", "regex": r"^rm -rf build(/|$)"},
            "decision": "approve",
        },
        {
            "name": "no-root",
            "tools": "*",
            "principals": "guest-*",
            "decision": "deny",
            "note": "guests cannot get approval",
        },
    )
]


def request(
    tool: str, arguments: dict[str, object], principal: str | None = None
) -> ApprovalRequest:
    return ApprovalRequest(
        id="r", tool=tool, arguments=arguments, rule=None, reason="", principal=principal,
        run_id=None, status=ApprovalStatus.PENDING, created_at=0, expires_at=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (request("shell.run", {"command": "rm -rf build"}), (True, "auto:build-dir", None)),
        (
            request("shell.run", {"command": "rm -rf build/x"}, "guest-1"),
            (True, "auto:build-dir", None),
        ),
        (
            request("shell.run", {"command": "rm -rf /"}, "guest-1"),
            (False, "auto:no-root", "guests cannot get approval"),
        ),
        (request("shell.run", {"command": "rm -rf /"}, "ada"), None),
        (request("shell.run", {}), None),
        (request("files.delete", {"path": "x"}), None),
    ],
)
async def test_first_matching_rule_decides_or_it_abstains(
    call: ApprovalRequest, expected: tuple[bool, str, str | None] | None
) -> None:
    decision = await AutoApprover(RULES)(call)
    if expected is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.approved, decision.by, decision.note) == expected


async def test_a_plain_async_function_is_an_approver(tmp_path: Path) -> None:
    async def yes(request: ApprovalRequest, /) -> ApprovalDecision | None:
        return ApprovalDecision(approved=True, by="yes", arguments={"command": "ls"})

    chain: list[Approver] = [AutoApprover(RULES), yes]
    store = ApprovalStore(tmp_path / "a.db")
    pending = store.create(tool="shell.run", arguments={"command": "rm -rf /"}, reason="x",
                           timeout_s=60)  # fmt: skip
    for approver in chain:
        decision = await approver(pending)
        if decision is not None:
            break
    assert decision is not None and decision.by == "yes"
    assert store.decide(pending.id, approve=decision.approved, by=decision.by,
                        arguments=decision.arguments, note=decision.note)  # fmt: skip
    final = store.get(pending.id)
    assert final is not None and final.effective_arguments == {"command": "ls"}


def test_edited_arguments_only_on_approval() -> None:
    with pytest.raises(UsageError, match="only make sense when approving"):
        ApprovalDecision(approved=False, by="x", arguments={})


def test_rules_load_from_yaml_with_line_numbers() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml_model(
            "name: a\ntools: x\nwhen: {arg: c, regx: y}\ndecision: approve\n",
            AutoApprovalRule,
            source="auto.yaml",
        )
    assert str(caught.value).startswith("auto.yaml:3: when.regx: unknown field 'regx'")
    with pytest.raises(ConfigError, match="expected one of approve, deny, got 'allow'"):
        parse_yaml_model("name: a\ntools: x\ndecision: allow\n", AutoApprovalRule, source="a")
