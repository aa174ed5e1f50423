"""Stockade: sandboxed tool execution for LLM agents.

Every tool call runs in a throwaway, hardened Docker container under the
organisation's policy. See ``DESIGN.md`` in the shared folder for the
architecture; the public entry points live in the sub-packages.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
