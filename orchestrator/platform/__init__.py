"""The one assembly: configuration in, a running platform (and its gateway) out."""

from orchestrator.platform._metrics import serving_metrics
from orchestrator.platform._parts import (
    CheckedConfiguration,
    build_registry,
    check_configuration,
    image_builder,
    load_credentials,
    policy_file,
)
from orchestrator.platform._platform import Platform

__all__ = [
    "CheckedConfiguration",
    "Platform",
    "build_registry",
    "check_configuration",
    "image_builder",
    "load_credentials",
    "policy_file",
    "serving_metrics",
]
