"""Which toolkits a profile's warm host imports before its call: its tools' and those routed to it."""

from __future__ import annotations

from orchestrator.platform._parts import served_toolkits
from orchestrator.policy import Policy
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.tools import ToolRegistry


def registry() -> ToolRegistry:
    tools = ToolRegistry()
    for toolkit in ("toolkits.files", "toolkits.python", "toolkits.shell"):
        tools.load(toolkit)
    return tools


def policy(*rules: dict[str, object]) -> Policy:
    return Policy.model_validate({"version": 1, "default": "allow", "rules": list(rules)})


def test_a_profile_serves_the_toolkits_of_its_own_tools() -> None:
    profiles = {"default": SandboxProfile(), "spare": SandboxProfile(name="spare")}
    served = served_toolkits(registry(), profiles, policy())
    assert served["default"].host_toolkits == (
        "toolkits.files",
        "toolkits.python",
        "toolkits.shell",
    )
    assert served["spare"].host_toolkits == ()  # no tool runs there


def test_a_rule_that_routes_calls_to_a_profile_brings_their_toolkits() -> None:
    profiles = {"default": SandboxProfile(), "locked": SandboxProfile(name="locked")}
    routing = policy(
        {"name": "shell locked", "tools": "shell.*", "decision": "allow",
         "sandbox_profile": "locked"},
        {"name": "no profile", "tools": "files.*", "decision": "allow"},
    )  # fmt: skip
    served = served_toolkits(registry(), profiles, routing)
    assert served["locked"].host_toolkits == ("toolkits.shell",)
    assert "toolkits.shell" in (served["default"].host_toolkits or ())


def test_a_list_the_configuration_set_is_kept() -> None:
    profiles = {"default": SandboxProfile(host_toolkits=("toolkits.python",))}
    routing = policy({"name": "r", "tools": "*", "decision": "allow", "sandbox_profile": "default"})
    served = served_toolkits(registry(), profiles, routing)
    assert served["default"].host_toolkits == ("toolkits.python",)
