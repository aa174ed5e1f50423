"""The platform's configuration: ``stockade.yaml``, the environment and the flags, merged.

Precedence, highest first: command-line flag > ``STOCKADE_*`` environment
variable > configuration file > built-in default. See
:func:`load_config` and ``stockade config show``.
"""

from orchestrator.config._env import (
    CONFIG_VARIABLE,
    ENVIRONMENT_FIELDS,
    config_file_from_env,
    secret_from_env,
)
from orchestrator.config._load import LoadedConfig, load_config
from orchestrator.config._model import (
    BUILTIN_TOOLKITS,
    ApprovalsSettings,
    ArtifactsSettings,
    AuditSettings,
    DockerBackendSettings,
    EmbedderSettings,
    Engine,
    ImagesSettings,
    LexicalEmbedderSettings,
    LimitsSettings,
    LoggingSettings,
    MemorySettings,
    MetricsSettings,
    MiniLMEmbedderSettings,
    ModelSettings,
    OpenAIEmbedderSettings,
    RayBackendSettings,
    SandboxSettings,
    SecretBinding,
    SecretSettings,
    ServerSettings,
    StockadeConfig,
    TracingSettings,
    builtin_profiles,
)
from orchestrator.config._schema import config_schema, render_config_schema

__all__ = [
    "BUILTIN_TOOLKITS",
    "CONFIG_VARIABLE",
    "ENVIRONMENT_FIELDS",
    "ApprovalsSettings",
    "ArtifactsSettings",
    "AuditSettings",
    "DockerBackendSettings",
    "EmbedderSettings",
    "Engine",
    "ImagesSettings",
    "LexicalEmbedderSettings",
    "LimitsSettings",
    "LoadedConfig",
    "LoggingSettings",
    "MemorySettings",
    "MetricsSettings",
    "MiniLMEmbedderSettings",
    "ModelSettings",
    "OpenAIEmbedderSettings",
    "RayBackendSettings",
    "SandboxSettings",
    "SecretBinding",
    "SecretSettings",
    "ServerSettings",
    "StockadeConfig",
    "TracingSettings",
    "builtin_profiles",
    "config_file_from_env",
    "config_schema",
    "load_config",
    "render_config_schema",
    "secret_from_env",
]
