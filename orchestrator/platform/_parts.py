"""The pieces the platform is assembled from, each made from the configuration.

:class:`~orchestrator.platform.Platform` wires them together; ``stockade
doctor`` makes them one at a time to say which one fails. Nothing else makes
them.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker

from orchestrator.approvals import ApproversConfig, load_approvers
from orchestrator.assets import shipped
from orchestrator.config import (
    LoadedConfig,
    SecretBinding,
    SecretSettings,
    StockadeConfig,
    secret_from_env,
)
from orchestrator.errors import ConfigError
from orchestrator.policy import Policy, load_policy
from orchestrator.sandbox._egress_tls import upstream_context
from orchestrator.sandbox.credentials import (
    MIN_SECRET_LENGTH,
    Credential,
    CredentialBinding,
    CredentialBindings,
)
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.tools import ToolRegistry
from orchestrator.yamlfile import line_of

__all__ = [
    "CheckedConfiguration",
    "build_registry",
    "check_configuration",
    "check_profiles",
    "external_toolkits",
    "image_builder",
    "load_configured_approvers",
    "load_configured_policy",
    "load_credentials",
    "policy_file",
    "served_toolkits",
]


def _config_file(loaded: LoadedConfig, field: str) -> tuple[str | None, int | None]:
    """The file and line that set ``field``, when a file did."""
    origin = loaded.source_of(field)
    if loaded.file is not None and origin.startswith(str(loaded.file) + ":"):
        return str(loaded.file), int(origin.rpartition(":")[2])
    return (str(loaded.file) if loaded.file else None), None


def policy_file(config: StockadeConfig) -> Path:
    """The configured policy file, else the shipped ``default.yaml``."""
    return config.policy or shipped("policies") / "default.yaml"


def load_configured_policy(config: StockadeConfig) -> Policy:
    """The policy, validated (errors name its file, line and field)."""
    return load_policy(policy_file(config))


def load_configured_approvers(config: StockadeConfig) -> ApproversConfig:
    """The approvers file's rules and webhook; none configured: nobody but people."""
    path = config.approvals.approvers
    return load_approvers(path) if path is not None else ApproversConfig()


def external_toolkits(config: StockadeConfig) -> tuple[str, ...]:
    """The configured toolkits that are not built in (baked into the tools image on build)."""
    return tuple(name for name in config.toolkits if name.split(".")[0] != "toolkits")


def build_registry(loaded: LoadedConfig) -> ToolRegistry:
    """The tools of the configured toolkits; a toolkit that cannot load names the setting."""
    registry = ToolRegistry()
    for name in loaded.config.toolkits:
        try:
            registry.load(name)
        except ConfigError:
            raise
        except Exception as exc:
            file, line = _config_file(loaded, "toolkits")
            raise ConfigError(
                f"toolkit {name!r} cannot be loaded: {exc} (set by {loaded.source_of('toolkits')})",
                file=file,
                line=line,
                field="toolkits",
            ) from exc
    return registry


def image_builder(
    config: StockadeConfig,
    client: docker.DockerClient,
    *,
    refresh_base: bool = False,
    progress: Callable[[str], None] = lambda _message: None,
) -> ImageBuilder:
    """The image builder for the configured sources, base, toolkits and image specs.

    ``refresh_base``: build the bases again from what is published now
    (:class:`~orchestrator.sandbox.images.ImageBuilder`)."""
    return ImageBuilder(
        client,
        images_dir=config.images.sources,
        base_image=config.images.base_image,
        toolkits=external_toolkits(config),
        specs=config.images.specs,
        wheel_cache=config.state_dir / "cache" / "wheels",
        refresh_base=refresh_base,
        progress=progress,
    )


def check_profiles(
    loaded: LoadedConfig,
    registry: ToolRegistry,
    policy: Policy,
    profiles: Mapping[str, SandboxProfile],
) -> None:
    """Every profile a tool or a policy rule names is configured; else a ConfigError."""
    known = ", ".join(sorted(profiles))
    for spec in registry.tools():
        if spec.profile not in profiles:
            file, _line = _config_file(loaded, "sandbox.profiles")
            raise ConfigError(
                f"tool {spec.name} runs in sandbox profile {spec.profile!r}, which is not "
                f"configured; configured profiles: {known}",
                file=file,
                field="sandbox.profiles",
            )
    source = policy_file(loaded.config)
    for index, rule in enumerate(policy.rules):
        if rule.sandbox_profile and rule.sandbox_profile not in profiles:
            loc = ("rules", index, "sandbox_profile")
            raise ConfigError(
                f"rule {rule.name!r} names sandbox profile {rule.sandbox_profile!r}, which is "
                f"not configured; configured profiles: {known}",
                file=str(source),
                line=line_of(source, loc),
                field=f"rules[{index}].sandbox_profile",
            )


def _upstream_ca(loaded: LoadedConfig, field: str, bound: SecretBinding) -> bytes | None:
    """The binding's ``ca_file``, read and checked to hold CA certificates; None if unset."""
    if bound.ca_file is None:
        return None
    file, line = _config_file(loaded, field.partition("[")[0])
    try:
        pem = bound.ca_file.read_bytes()
        upstream_context(pem)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{bound.ca_file} must hold the PEM certificates to trust for {bound.host}: {exc}",
            file=file,
            line=line,
            field=field,
        ) from exc
    return pem


def _secret_value(
    loaded: LoadedConfig, name: str, secret: SecretSettings, environ: Mapping[str, str] | None
) -> str:
    field = f"secrets.{name}.{'env' if secret.env else 'file'}"
    file, line = _config_file(loaded, field)

    def refused(message: str) -> ConfigError:
        return ConfigError(message, file=file, line=line, field=field)

    if secret.env is not None:
        value = secret_from_env(secret.env, environ)
        if value is None:
            raise refused(f"the environment variable {secret.env} is not set")
    else:
        assert secret.file is not None
        try:
            value = secret.file.read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise refused(f"cannot read the secret's file: {exc}") from exc
    if len(value) < MIN_SECRET_LENGTH or any(c in value for c in "\r\n\0"):
        # Never say what it is: only what is wrong with it.
        raise refused(
            f"the secret must be one line of at least {MIN_SECRET_LENGTH} characters "
            f"(it has {len(value)})"
        )
    return value


def load_credentials(
    loaded: LoadedConfig, environ: Mapping[str, str] | None = None
) -> CredentialBindings:
    """The configured secrets, read from their variables and files, bound as configured.

    Raises :class:`~orchestrator.errors.ConfigError` naming the secret's field
    when a variable is unset, a file unreadable or a value unfit (never the value).
    """
    bindings: list[CredentialBinding] = []
    for name, secret in loaded.config.secrets.items():
        value = _secret_value(loaded, name, secret, environ)
        for index, bound in enumerate(secret.bind):
            credential = Credential(
                name=name,
                host=bound.host,
                port=bound.port,
                header=secret.header,
                template=secret.format,
                value=value,
                upstream_ca=_upstream_ca(loaded, f"secrets.{name}.bind[{index}].ca_file", bound),
            )
            principals = tuple(bound.principals) if bound.principals is not None else None
            bindings.append(
                CredentialBinding(
                    profile=bound.profile, credential=credential, principals=principals
                )
            )
    return CredentialBindings(bindings)


def served_toolkits(
    registry: ToolRegistry, profiles: Mapping[str, SandboxProfile], policy: Policy
) -> dict[str, SandboxProfile]:
    """``profiles`` with ``host_toolkits`` set to the modules of the tools each one runs
    (where the configuration left it unset): a warm host imports what its calls need only.

    A tool runs in its own profile and in every profile a policy rule that
    matches its name routes calls to (``sandbox_profile``): a host there has
    its module loaded too, instead of importing it when such a call arrives.
    """
    served: dict[str, set[str]] = {name: set() for name in profiles}
    for spec in registry.tools():
        module = spec.entrypoint.partition(":")[0]
        served.setdefault(spec.profile, set()).add(module)
        for rule in policy.rules:
            if rule.sandbox_profile and rule.match.tools.match(spec.name):
                served.setdefault(rule.sandbox_profile, set()).add(module)
    return {
        name: profile
        if profile.host_toolkits is not None
        else profile.model_copy(update={"host_toolkits": tuple(sorted(served[name]))})
        for name, profile in profiles.items()
    }


@dataclass(frozen=True, kw_only=True)
class CheckedConfiguration:
    """What the configuration names, loaded and checked against each other."""

    registry: ToolRegistry
    """The configured toolkits' tools."""
    policy: Policy
    """The policy."""
    approvers: ApproversConfig
    """The approvers file's content."""
    profiles: dict[str, SandboxProfile]
    """The effective sandbox profiles."""


def check_configuration(loaded: LoadedConfig) -> CheckedConfiguration:
    """Load everything the configuration names and check it fits, without the engine.

    Raises :class:`~orchestrator.errors.ConfigError` at the first mistake.
    """
    registry = build_registry(loaded)
    policy = load_configured_policy(loaded.config)
    approvers = load_configured_approvers(loaded.config)
    profiles = loaded.config.sandbox.effective_profiles()
    check_profiles(loaded, registry, policy, profiles)
    return CheckedConfiguration(
        registry=registry, policy=policy, approvers=approvers, profiles=profiles
    )
