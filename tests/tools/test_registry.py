"""Tool definitions: schemas from type hints, OpenAI format, host-side validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ConfigError
from orchestrator.tools import (
    ToolCall,
    ToolRegistry,
    ToolResult,
    ToolStatus,
    ValidatedCall,
    openai_name,
)
from stockade_sdk import tool

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    tools = ToolRegistry()
    tools.load("sample_toolkit")
    return tools


def call(name: str, arguments: Any) -> ToolCall:
    return ToolCall(id="c1", name=name, arguments=arguments)


def test_loads_marked_functions_from_the_whole_package(registry: ToolRegistry) -> None:
    assert [spec.name for spec in registry.tools()] == [
        "sample_toolkit.everything",
        "sample_toolkit.greet",
        "sample_toolkit.nested",
    ]
    greet = registry.get("sample_toolkit.greet")
    assert greet is not None
    assert greet.profile == "tiny" and greet.entrypoint.endswith(":say_hello")


def test_schema_for_every_common_type(registry: ToolRegistry) -> None:
    spec = registry.get("sample_toolkit.everything")
    assert spec is not None
    props = spec.schema["properties"]
    assert props["text"] == {"type": "string", "description": "Some text."}
    assert props["count"]["type"] == "integer"
    assert props["count"]["description"] == "How many. Continued on a second line."
    assert props["ratio"]["type"] == "number"
    assert props["flag"]["type"] == "boolean"
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert spec.schema["$defs"]["Color"]["enum"] == ["red", "blue"]
    assert props["tags"]["items"] == {"type": "string"}
    assert props["extra"]["additionalProperties"] == {"type": "integer"}
    assert spec.schema["$defs"]["Point"]["required"] == ["x", "y"]
    assert {"type": "null"} in props["maybe"]["anyOf"]
    assert spec.schema["additionalProperties"] is False
    assert sorted(spec.schema["required"]) == sorted(props)
    assert spec.description == "Take one of every type."


def test_strict_mode_only_when_the_schema_allows(registry: ToolRegistry) -> None:
    greet = registry.get("sample_toolkit.greet")
    nested = registry.get("sample_toolkit.nested")
    everything = registry.get("sample_toolkit.everything")
    assert greet is not None and nested is not None and everything is not None
    assert greet.strict is False, "defaults make parameters optional: not strict"
    assert nested.strict is True
    assert everything.strict is False, "dict[str, int] needs additionalProperties with a schema"
    fmt = nested.openai()
    assert fmt["type"] == "function"
    assert fmt["function"]["name"] == "sample_toolkit__nested"
    assert fmt["function"]["strict"] is True


def test_openai_names_round_trip(registry: ToolRegistry) -> None:
    for spec in registry.tools():
        assert registry.get(openai_name(spec.name)) is spec


def test_valid_arguments_get_defaults(registry: ToolRegistry) -> None:
    result = registry.validate(call("sample_toolkit.greet", '{"name": "Ada"}'))
    assert isinstance(result, ValidatedCall)
    assert result.arguments == {"name": "Ada", "times": 1}
    empty = registry.validate(call("sample_toolkit__greet", ""))
    assert isinstance(empty, ValidatedCall) and empty.arguments["name"] == "world"


@pytest.mark.parametrize(
    ("name", "arguments", "status", "needle"),
    [
        ("sample_toolkit.gret", "{}", ToolStatus.UNKNOWN_TOOL, "did you mean sample_toolkit.greet"),
        ("sample_toolkit.greet", "{not json", ToolStatus.INVALID_ARGUMENTS, "not valid JSON"),
        ("sample_toolkit.greet", "[1, 2]", ToolStatus.INVALID_ARGUMENTS, "must be a JSON object"),
        ("sample_toolkit.greet", '{"times": "many"}', ToolStatus.INVALID_ARGUMENTS, "times:"),
        (
            "sample_toolkit.greet",
            '{"nmae": "x"}',
            ToolStatus.INVALID_ARGUMENTS,
            "nmae: Extra inputs",
        ),
        ("sample_toolkit.nested", "{}", ToolStatus.INVALID_ARGUMENTS, "path: Field required"),
        ("sample_toolkit.greet", "[" * 100_000, ToolStatus.INVALID_ARGUMENTS, "not valid JSON"),
        ("sample_toolkit.greet", '"' + "x" * 300_000 + '"', ToolStatus.INVALID_ARGUMENTS, "exceed"),
        # Half a surrogate pair, as JSON can escape it: not text (no log or page holds it).
        (
            "sample_toolkit.greet",
            '{"name": "a\\ud800b"}',
            ToolStatus.INVALID_ARGUMENTS,
            "name: holds half a UTF-16 surrogate pair",
        ),
        (
            "sample_toolkit.nested",
            '{"path": {"parts": ["ok", "\\udfff"]}}',
            ToolStatus.INVALID_ARGUMENTS,
            "path.parts.1: holds half",
        ),
        (
            "sample_toolkit.greet",
            '{"\\ud800": 1}',
            ToolStatus.INVALID_ARGUMENTS,
            "'\\ud800': holds half",
        ),
        # Numbers JSON cannot carry (1e999 is valid JSON text, the others Python's reader
        # takes): they passed a float parameter, and the policy compared NaN.
        *(
            (
                "sample_toolkit.everything",
                '{"ratio": ' + number + "}",
                ToolStatus.INVALID_ARGUMENTS,
                f"ratio: {shown} is not a number JSON can carry",
            )
            for number, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-1e999", "-inf"))
        ),
        (
            "sample_toolkit.everything",
            '{"extra": {"n": [1, NaN]}}',
            ToolStatus.INVALID_ARGUMENTS,
            "extra.n.1: nan is not",
        ),
    ],
)
def test_bad_calls_become_readable_results(
    registry: ToolRegistry, name: str, arguments: str, status: ToolStatus, needle: str
) -> None:
    result = registry.validate(call(name, arguments))
    assert isinstance(result, ToolResult)
    assert result.status is status
    assert result.error is not None and needle in result.error
    assert result.for_model().startswith(f"[{status.value}]")


@pytest.mark.parametrize("run_id", ["../up", "a b", ".hidden", "x" * 129, "", "r1\n"])
def test_a_run_id_that_cannot_name_a_directory_is_refused_up_front(
    registry: ToolRegistry, run_id: str
) -> None:
    """Any entrance (the Python API too): an invalid argument, not a platform failure."""
    bad = ToolCall(id="c1", name="sample_toolkit.greet", arguments="{}", run_id=run_id)
    result = registry.validate(bad)
    assert isinstance(result, ToolResult) and result.status is ToolStatus.INVALID_ARGUMENTS
    assert result.error == (
        f"invalid run id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
    fine = ToolCall(id="c1", name="sample_toolkit.greet", arguments="{}", run_id="run-1.a_b")
    assert isinstance(registry.validate(fine), ValidatedCall)


def test_validation_message_says_what_was_expected(registry: ToolRegistry) -> None:
    result = registry.validate(call("sample_toolkit.greet", '{"times": "x"}'))
    assert isinstance(result, ToolResult) and result.error is not None
    assert "expected an object with: name?, times?" in result.error


def test_definition_mistakes_fail_fast() -> None:
    tools = ToolRegistry()

    @tool
    def untyped(x):  # type: ignore[no-untyped-def]
        """No hints."""

    @tool
    def undocumented(x: int) -> None:
        pass

    @tool
    def variadic(*args: int) -> None:
        """Variadic."""

    with pytest.raises(ConfigError, match="no type hint"):
        tools.register(untyped, toolkit="t")
    with pytest.raises(ConfigError, match="needs a docstring"):
        tools.register(undocumented, toolkit="t")
    with pytest.raises(ConfigError, match=r"\*args"):
        tools.register(variadic, toolkit="t")
    with pytest.raises(ConfigError, match="lower_snake_case"):
        tools.register(variadic, toolkit="Bad__Kit")


def test_duplicate_names_name_both_definitions(registry: ToolRegistry) -> None:
    with pytest.raises(ConfigError, match="defined twice") as caught:
        registry.load("sample_toolkit")
    assert "sample_toolkit:everything and sample_toolkit:everything" in str(caught.value)


def test_unknown_toolkit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        ToolRegistry().load("no_such_toolkit_anywhere")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=JSON, name=st.sampled_from(["sample_toolkit.everything", "sample_toolkit.greet"]))
def test_any_json_gives_a_clean_answer(registry: ToolRegistry, arguments: Any, name: str) -> None:
    for form in (arguments, json.dumps(arguments)):
        result = registry.validate(call(name, form))
        assert isinstance(result, ValidatedCall | ToolResult)
        if isinstance(result, ToolResult):
            assert result.status is ToolStatus.INVALID_ARGUMENTS and result.error


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.text())
def test_any_string_gives_a_clean_answer(registry: ToolRegistry, raw: str) -> None:
    result = registry.validate(call("sample_toolkit.greet", raw))
    assert isinstance(result, ValidatedCall | ToolResult)


def test_cli_lists_tools_and_prints_schemas() -> None:
    import os
    import subprocess

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "STOCKADE_TOOLKITS": "sample_toolkit",
    }
    listed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "tools", "list"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "sample_toolkit.greet" in listed.stdout and "tiny" in listed.stdout
    schema = subprocess.run(
        [sys.executable, "-m", "orchestrator", "tools", "schema", "sample_toolkit.nested"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(schema.stdout)["function"]["name"] == "sample_toolkit__nested"
    missing = subprocess.run(
        [sys.executable, "-m", "orchestrator", "tools", "schema", "nope.nope"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 2 and "unknown tool" in missing.stderr


def test_a_model_reads_the_first_entries_not_kept_and_how_many_more() -> None:
    rejected = tuple(f"l{n}: symbolic link to 'x'" for n in range(25))
    result = ToolResult(call_id="c", name="shell.run", status=ToolStatus.OK, output="done",
                        files_rejected=rejected)  # fmt: skip
    lines = result.for_model().splitlines()
    assert lines[0] == "done"
    assert lines[1:3] == [
        "not kept in the workspace: l0: symbolic link to 'x'",
        "not kept in the workspace: l1: symbolic link to 'x'",
    ]
    assert lines[-2:] == [
        "not kept in the workspace: l19: symbolic link to 'x'",
        "and 5 more entries not kept",
    ]
    assert len(lines) == 22


def test_a_model_reads_the_first_artifacts_dropped_and_how_many_more() -> None:
    """5 000 files under outputs/ were 4 968 lines "past the cap of 32 artifacts a call"."""
    dropped = tuple(f"f{n}.txt: past the cap of 32 artifacts a call" for n in range(4968))
    result = ToolResult(call_id="c", name="python.run", status=ToolStatus.OK, output="done",
                        artifacts_dropped=dropped)  # fmt: skip
    lines = result.for_model().splitlines()
    assert lines[1] == "artifact dropped: f0.txt: past the cap of 32 artifacts a call"
    assert lines[-2:] == [
        "artifact dropped: f19.txt: past the cap of 32 artifacts a call",
        "and 4948 more artifacts dropped",
    ]
    assert len(lines) == 22


def test_a_surrogate_pair_escaped_in_json_is_the_character_it_spells(
    registry: ToolRegistry,
) -> None:
    validated = registry.validate(call("sample_toolkit.greet", '{"name": "\\ud83d\\ude00"}'))
    assert isinstance(validated, ValidatedCall), validated
    assert validated.arguments["name"] == "\N{GRINNING FACE}"
