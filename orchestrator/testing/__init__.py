"""Fakes and guards for testing against Stockade without leaving the machine."""

from orchestrator.testing.egress import (
    FixedResolver,
    HttpApp,
    HttpRequest,
    LoopbackOnlyConnector,
    NonLoopbackConnectionError,
    UnknownNameError,
    serve_http,
)

__all__ = [
    "FixedResolver",
    "HttpApp",
    "HttpRequest",
    "LoopbackOnlyConnector",
    "NonLoopbackConnectionError",
    "UnknownNameError",
    "serve_http",
]
