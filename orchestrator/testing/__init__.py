"""Fakes and guards for testing against Stockade without leaving the machine."""

from orchestrator.testing.egress import (
    FixedResolver,
    LoopbackOnlyConnector,
    NonLoopbackConnectionError,
    UnknownNameError,
    serve_http,
)

__all__ = [
    "FixedResolver",
    "LoopbackOnlyConnector",
    "NonLoopbackConnectionError",
    "UnknownNameError",
    "serve_http",
]
