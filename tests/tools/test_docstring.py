"""Docstring parsing for tool and parameter descriptions."""

from orchestrator.tools._docstring import parse_docstring


def test_summary_and_args() -> None:
    summary, params = parse_docstring(
        """Do a thing.

        More detail here.

        Args:
            first (int): The first.
            second: The second,
                over two lines.
            *rest: Everything else.

        Returns:
            Something.
        """
    )
    assert summary == "Do a thing.\n\nMore detail here."
    assert params == {
        "first": "The first.",
        "second": "The second, over two lines.",
        "rest": "Everything else.",
    }


def test_no_docstring() -> None:
    assert parse_docstring(None) == ("", {})
