"""The one assembly: configuration in, a running platform (and its gateway) out."""

from orchestrator.platform._platform import Platform

__all__ = ["Platform"]
