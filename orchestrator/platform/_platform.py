"""The platform: every component, wired once from the configuration, torn down as one.

Entrances (the CLI, the demo, the benchmarks, later the agent, the HTTP API
and the MCP server) open a :class:`Platform` and ask it for the gateway. They
never wire components themselves, so there is no second path to a sandbox.

Assembly order: everything that can be checked without the engine is checked
first (toolkits, policy, approvers, profiles named by tools and rules), so a
configuration mistake fails fast; then the engine is reached, the backend
started and the gateway made. Leaving the context (normally, on an error, on
Ctrl-C or on SIGTERM turned into cancellation by the entrance) destroys the
pools and every container the platform still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from orchestrator.approvals import ApprovalStore, Approver
from orchestrator.artifacts import ArtifactLimits, ArtifactStore
from orchestrator.audit import AuditLog
from orchestrator.config import LoadedConfig, StockadeConfig
from orchestrator.gateway import ApprovalGate, Gateway
from orchestrator.metrics import Metrics
from orchestrator.platform._limits import open_limit_store
from orchestrator.platform._parts import (
    check_configuration,
    image_builder,
    load_credentials,
    policy_file,
    served_toolkits,
)
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox._egress_tls import Interception
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.sandbox.engine import connect_engine
from orchestrator.sandbox.execution import ExecStatus
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolExecutor, ToolRegistry
from orchestrator.tracing import gateway_type, open_tracer

__all__ = ["Platform"]


@dataclass(frozen=True, kw_only=True)
class Platform:
    """The assembled platform. Make one with :meth:`open`."""

    config: StockadeConfig
    """The effective configuration."""
    loaded: LoadedConfig
    """The configuration with the origin of each value."""
    gateway: Gateway
    """The one path for tool calls: policy, limits, approvals, sandbox, audit."""
    registry: ToolRegistry
    """The tools of the configured toolkits."""
    profiles: dict[str, SandboxProfile]
    """The configured sandbox profiles by name."""
    approvals: ApprovalStore
    """The durable approval requests."""
    workspaces: WorkspaceManager
    """The runs' workspaces."""
    artifacts: ArtifactStore
    """The runs' artifacts (``outputs/`` files), in ``runs/<run_id>/artifacts`` of the state
    directory."""
    metrics: Metrics
    """The platform's Prometheus metrics."""
    sandbox: SandboxBackend
    """The sandbox backend: for operators' diagnostics (``doctor``, ``sandbox run``).
    Tool calls never use it directly: they go through :attr:`gateway`."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        config: LoadedConfig | StockadeConfig,
        *,
        approvers: Sequence[Approver] = (),
        terminal: bool = False,
        backend: SandboxBackend | None = None,
        warm: bool = False,
        pools: bool = True,
        metrics: Metrics | None = None,
    ) -> AsyncIterator[Platform]:
        """Assemble the platform from ``config``; leaving the context tears it down.

        ``approvers`` are asked after the approvers file's (a CLI announces
        pending requests this way); ``terminal`` adds a prompt on this
        terminal. ``backend`` replaces the configured sandbox backend (tests
        and benchmarks pass a scripted one). ``warm`` fills the pools of the
        profiles the tools use before the platform is handed out; ``pools=False``
        keeps no warm containers at all (a one-shot command would only start
        containers to throw them away). ``metrics`` replaces the platform's own
        (made from the ``metrics`` section; off, every instrument does nothing). Raises
        :class:`~orchestrator.errors.ConfigError` for a configuration mistake
        (file, line and field) and :class:`~orchestrator.errors.InfrastructureError`
        when the engine or the state directory cannot be used.
        """
        loaded = (
            config
            if isinstance(config, LoadedConfig)
            else LoadedConfig(config=config, file=None, sources={})
        )
        settings = loaded.config
        checked = check_configuration(loaded)
        registry, policy, profiles = checked.registry, checked.policy, checked.profiles
        profiles = served_toolkits(registry, profiles, policy)
        if not pools:
            profiles = {n: p.model_copy(update={"pool_size": 0}) for n, p in profiles.items()}
        used = {spec.profile for spec in registry.tools()}
        warm_profiles = [p for name, p in profiles.items() if warm and name in used]
        own_metrics = metrics if metrics is not None else Metrics(enabled=settings.metrics.enabled)
        own_metrics.sandbox.declare(
            [(p.name, p.runtime) for p in profiles.values()], [s.value for s in ExecStatus]
        )
        if settings.model.name:
            own_metrics.agent.declare_model(settings.model.name)
        # Secrets are read before the engine is reached: a missing one fails fast.
        credentials = load_credentials(loaded)
        for secret_name, secret in settings.secrets.items():
            for bound in secret.bind:
                own_metrics.sandbox.egress_credentials.labels(bound.profile, secret_name)

        # None when tracing is off: then no OpenTelemetry is imported and the plain
        # gateway is built.
        tracer = open_tracer(loaded, redact=policy.redact)

        async with contextlib.AsyncExitStack() as stack:
            if tracer is not None:
                # Last out: the runs' spans are flushed to the collector (off the loop).
                stack.push_async_callback(asyncio.to_thread, tracer.shutdown)
            cluster = settings.sandbox.ray
            ca = None
            if backend is None and credentials:
                # The deployment's CA, made in the state directory on first start.
                ca = await asyncio.to_thread(
                    DeploymentCA.open, settings.state_dir, credentials.hosts
                )
                await asyncio.to_thread(ca.issue_all)  # renewed on the loop, weekly
            if backend is None and settings.sandbox.engine == "ray":
                from orchestrator.sandbox.ray_backend import RayBackend  # noqa: PLC0415 - extra

                assert cluster is not None  # the config's validator requires it
                backend = RayBackend(
                    address=cluster.address,
                    namespace=cluster.namespace,
                    profiles=warm_profiles,
                    metrics=own_metrics,
                    state_dir=settings.state_dir,
                    # Hosts get its certificate; calls bring their leaves, sealed.
                    egress_ca=ca,
                    credential_profiles=credentials.profiles,
                )
            elif backend is None:
                engine = settings.sandbox.docker
                client = await asyncio.to_thread(connect_engine)
                stack.callback(client.close)
                interception = None
                if ca is not None:
                    interception = Interception(ca=ca, profiles=credentials.profiles)
                backend = DockerBackend(
                    client,
                    images=image_builder(settings, client),
                    profiles=warm_profiles,
                    max_threads=engine.max_threads,
                    max_starting=engine.max_starting,
                    metrics=own_metrics,
                    egress_gates=EgressGates(
                        metrics=own_metrics.sandbox, interception=interception
                    ),
                )
            await stack.enter_async_context(backend)
            if isinstance(backend, DockerBackend):
                for profile in warm_profiles:
                    await backend.wait_warm(profile)
            workspaces = WorkspaceManager(settings.workspaces_root)
            artifacts = ArtifactStore(
                settings.runs_dir,
                ArtifactLimits(
                    max_per_call=settings.artifacts.max_per_call,
                    max_bytes=int(settings.artifacts.max_file_mb * (1 << 20)),
                    run_quota_bytes=int(settings.artifacts.run_quota_mb * (1 << 20)),
                ),
                metrics=own_metrics,
            )
            store = ApprovalStore(settings.approvals_db)
            chain = [
                *checked.approvers.approvers(terminal=terminal, redact_patterns=policy.redact),
                *approvers,
            ]
            audit = AuditLog(
                settings.audit_path,
                redact_patterns=policy.redact,
                max_value_bytes=settings.audit.max_value_bytes,
                rotate_bytes=settings.audit_rotate_bytes,
            )
            # Pending records are made durable before the backend goes (LIFO).
            stack.push_async_callback(audit.aclose)
            limits = open_limit_store(settings, own_metrics)
            stack.push_async_callback(limits.aclose)
            gateway = gateway_type(tracer)(
                ToolExecutor(
                    registry,
                    backend,
                    profiles=profiles.values(),
                    workspaces=workspaces,
                    credentials=credentials,
                    artifacts=artifacts,
                ),
                policy,
                audit,
                approvals=ApprovalGate(store, chain),
                metrics=own_metrics,
                # Every orchestrator process of this host (or, through Redis, of
                # every host) draws on one set of limits.
                limit_store=limits,
                policy_source=str(policy_file(settings)),
            )
            yield cls(
                config=settings,
                loaded=loaded,
                gateway=gateway,
                registry=registry,
                profiles=profiles,
                approvals=store,
                workspaces=workspaces,
                artifacts=artifacts,
                metrics=own_metrics,
                sandbox=backend,
            )
