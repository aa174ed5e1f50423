"""``stockade.yaml``: one file configures the whole platform.

Every section is a strict model (unknown keys fail, with the file, line and
field). Paths written in the file are relative to the file's directory;
paths from the environment or the command line are relative to the working
directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from orchestrator.policy._redis_limits import describe_redis_url
from orchestrator.sandbox._image_spec import IMAGE_REFERENCE_PATTERN, SPEC_NAME_PATTERN, ImageSpec
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.images import TOOLS_IMAGE
from orchestrator.sandbox.profile import Runtime, SandboxProfile
from orchestrator.strict import LocatedValueError, StrictModel

__all__ = [
    "BUILTIN_TOOLKITS",
    "ApprovalsSettings",
    "ArtifactsSettings",
    "AuditSettings",
    "DockerBackendSettings",
    "EmbedderSettings",
    "Engine",
    "ImagesSettings",
    "LexicalEmbedderSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MemorySettings",
    "MetricsSettings",
    "MiniLMEmbedderSettings",
    "ModelSettings",
    "OpenAIEmbedderSettings",
    "SandboxSettings",
    "SecretBinding",
    "SecretSettings",
    "ServerSettings",
    "StockadeConfig",
    "TracingSettings",
    "builtin_profiles",
]

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

BUILTIN_TOOLKITS = (
    "toolkits.files",
    "toolkits.http",
    "toolkits.node",
    "toolkits.python",
    "toolkits.shell",
)
"""The toolkits a platform loads when the configuration names none."""

_MiB = 1024 * 1024


def builtin_profiles(runtime: Runtime) -> dict[str, SandboxProfile]:
    """The profiles every platform has unless its file redefines them.

    ``default`` is the hardened profile on the tools image; ``http`` (the
    ``http`` toolkit's) adds egress through the proxy with an empty allowlist:
    everything is refused until the organisation names its hosts, and its warm
    hosts preload ``urllib.request`` (what ``http.fetch`` imports) instead of numpy.
    """
    return {
        "default": SandboxProfile(name="default", image=TOOLS_IMAGE, runtime=runtime),
        "http": SandboxProfile(
            name="http",
            image=TOOLS_IMAGE,
            runtime=runtime,
            egress=EgressPolicy(),
            loosen=frozenset({"egress"}),
            # Its containers serve http.fetch: they preload what fetch imports
            # (no longer every tools container's toolkits), not numpy for snippets.
            python_preload=("urllib.request",),
        ),
    }


Engine = Literal["docker", "ray"]
"""Where sandboxes run: this machine's Docker engine, or the sandbox hosts of a Ray cluster."""


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        # "" would be the configuration file's own directory: state, tokens and the audit
        # log written beside it (a checkout, say), never what an empty value meant.
        raise ValueError("an empty path; leave the key out for the default, or name a path")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_not_empty)]
"""A path in the configuration: never empty."""


class DockerBackendSettings(StrictModel):
    """The local Docker engine (the one the ``DOCKER_HOST`` environment names): tuning."""

    max_threads: int = Field(default=8, ge=1, le=64)
    """Threads for blocking engine calls (create, start, remove)."""
    max_starting: int = Field(default=2, ge=1, le=32)
    """Containers a pool starts at once."""


class RayBackendSettings(StrictModel):
    """The Ray cluster whose sandbox hosts run the calls (``docs/scale-out.md``; the ray extra).

    The orchestrator joins it only with Ray's token authentication in its environment
    (``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``); without them it refuses to start.
    """

    address: str = Field(min_length=3, pattern=r"^[^\s]+:[0-9]{1,5}$")
    """The cluster's GCS address, ``host:port`` (the head's ``ray start --port``)."""
    namespace: str = Field(default="stockade", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The Ray namespace the host actors live in, shared by every orchestrator that uses them."""


class SandboxSettings(StrictModel):
    """Where and how tool calls run."""

    runtime: Runtime = "runc"
    """Runtime of every profile that does not name its own: ``runc`` or ``runsc`` (gVisor)."""
    engine: Engine = "docker"
    """Where sandboxes run: ``docker`` (this machine's engine, default) or ``ray`` (the hosts
    of the cluster that ``ray`` names)."""
    docker: DockerBackendSettings = Field(default_factory=DockerBackendSettings)
    """Tuning of the ``docker`` engine."""
    ray: RayBackendSettings | None = None
    """The cluster of the ``ray`` engine: required when ``engine`` is ``ray``."""
    profiles: dict[str, SandboxProfile] = Field(default_factory=dict)
    """Profiles by name, added to (or replacing) the built-in ``default`` and ``http``.

    Each starts from the hardened defaults on the tools image; loosening a
    limit needs the limit named in ``loosen``.
    """

    @model_validator(mode="before")
    @classmethod
    def _no_backend_key(cls, data: Any) -> Any:
        # The key before issue 14's naming: refused with the new spelling, not
        # silently ignored (a cluster configured that way would run on Docker).
        if isinstance(data, dict) and "backend" in data:
            raise LocatedValueError(
                "sandbox.backend was replaced: write `engine: docker` or `engine: ray` "
                "in the sandbox section, with the engine's settings under `docker:` "
                "(max_threads, max_starting) or `ray:` (address, namespace)",
                ("backend",),
            )
        return data

    @model_validator(mode="after")
    def _engine_has_settings(self) -> Self:
        if self.engine == "ray" and self.ray is None:
            raise LocatedValueError(
                "sandbox.engine is ray: give the cluster as `ray: {address: <head's "
                "host>:<GCS port>}` in the sandbox section",
                ("engine",),
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _name_and_runtime(cls, data: Any) -> Any:
        # The key names the profile, and the section's runtime is the default
        # of each profile: filled in before a profile is validated.
        if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
            return data
        runtime = data.get("runtime", "runc")
        profiles: dict[Any, Any] = {}
        for name, spec in data["profiles"].items():
            if isinstance(spec, dict):
                if "name" in spec and spec["name"] != name:
                    raise LocatedValueError(
                        f"name {spec['name']!r} differs from the profile's key {name!r}",
                        ("profiles", name, "name"),
                    )
                profiles[name] = {"name": name, "image": TOOLS_IMAGE, "runtime": runtime, **spec}
            else:
                profiles[name] = spec
        return {**data, "profiles": profiles}

    def effective_profiles(self) -> dict[str, SandboxProfile]:
        """The built-in profiles with the file's profiles over them."""
        return {**builtin_profiles(self.runtime), **self.profiles}


class ImagesSettings(StrictModel):
    """Sandbox images (built offline, tagged by a hash of their inputs)."""

    base_image: Annotated[str, Field(pattern=IMAGE_REFERENCE_PATTERN, max_length=255)] | None = None
    """A registry image to use as base (e.g. ``python:3.12-slim``); none: build from Debian."""
    sources: ConfigPath | None = None
    """Directory of the image sources; none: the ``sandbox_images/`` shipped with Stockade."""
    specs: dict[Annotated[str, Field(pattern=SPEC_NAME_PATTERN, max_length=40)], ImageSpec] = Field(
        default_factory=dict
    )
    """Image specs by name: Debian packages and Python requirements added to the tools image,
    for the profiles that name the spec in ``image_spec``."""
    base_max_age_days: int | None = Field(default=30, ge=0, le=3650)
    """``stockade doctor`` warns about a base image older than this many days: Debian's
    security updates published since it was built are not in it (``stockade images build
    --refresh-base`` builds it again); none: never warn."""


class AuditSettings(StrictModel):
    """The hash-chained audit log."""

    path: ConfigPath | None = None
    """The log file; none: ``audit.jsonl`` in the state directory."""
    max_value_bytes: int = Field(default=4096, ge=64)
    """Largest argument or output value recorded whole; larger ones as SHA-256, size and head."""
    rotate_mb: int | None = Field(default=64, ge=1)
    """Start a new file (the chain continues) past this size; none: never rotate."""


class LimitsSettings(StrictModel):
    """Where rate limits and model budgets live, and who shares them."""

    store: str = "sqlite"
    """``sqlite``: ``limits.db`` in state_dir, shared by this host's processes; or a Redis
    URL (``redis://[:password@]host:6379/0``, ``rediss://`` for TLS, ``unix:///path``)
    shared by every orchestrator using that server (``pip install 'stockade[redis]'``)."""
    on_unavailable: Literal["closed", "open"] = "closed"
    """Redis unreachable: ``closed`` refuses calls (naming the store), ``open`` admits them
    uncounted; either is counted by ``stockade_limit_store_unavailable_total``."""
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding Redis's password, so the URL (shown by ``stockade config
    show``) carries none; none: the URL's own, if any."""
    key_prefix: str = Field(default="stockade:", min_length=1, max_length=64)
    """Prefix of every Redis key (several platforms may share one server)."""
    timeout_s: float = Field(default=0.5, gt=0, le=30)
    """Longest wait for Redis to connect or answer before it counts as unavailable."""

    @field_validator("store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "sqlite":
            try:
                describe_redis_url(value)
            except ValueError as exc:
                raise ValueError(f"give sqlite or a Redis URL: {exc}") from None
        return value


class ApprovalsSettings(StrictModel):
    """Durable approval requests, and who decides them."""

    database: ConfigPath | None = None
    """The SQLite database of requests; none: ``approvals.db`` in the state directory."""
    approvers: ConfigPath | None = None
    """The approvers file (auto rules, webhook); none: only people, at the prompt or the CLI."""


class ModelSettings(StrictModel):
    """The agent's language model: any OpenAI-compatible chat-completions server."""

    base_url: str | None = None
    """Server URL (OpenAI, vLLM, Ollama, llama.cpp…); none: no model configured."""
    name: str | None = None
    """Model name the server knows."""
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the API key (the key itself never goes in this file)."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    """Sampling temperature."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Deadline of one request (one attempt, streamed replies read to their end)."""
    stream: bool = False
    """Receive replies as server-sent events, text as it is generated; the reply is the same
    (a stream that ends without a ``finish_reason`` was cut short, and is tried again)."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per request, the first included; only 429, 5xx, timeouts, lost connections and
    streams cut short are tried again."""
    retry_max_total_s: float = Field(default=300.0, gt=0)
    """Bound on one request's attempts and the waits between them together; a wait (a
    server's ``Retry-After`` included) that would cross it ends the retries."""
    backoff_initial_s: float = Field(default=0.5, gt=0)
    """First wait between attempts when the server names none (exponential, full jitter)."""
    backoff_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between attempts when the server names none."""
    accepts_images: bool = False
    """The model reads images: a batch's image artifacts (PNG, JPEG, GIF, WebP) are sent to it
    in one user message after the tool messages; false: only a text line per artifact."""


class ArtifactsSettings(StrictModel):
    """Files tool calls write under ``outputs/`` of their workspace, kept as artifacts."""

    max_per_call: int = Field(default=32, ge=0, le=10_000)
    """Artifacts one call may leave; the rest (by name) are dropped and named in the result."""
    max_file_mb: float = Field(default=16, gt=0)
    """Largest artifact; larger files are dropped and named in the result."""
    run_quota_mb: float = Field(default=256, gt=0)
    """What a run's artifacts may take in all (identical contents counted once); files past
    it are dropped and named in the result."""


class MiniLMEmbedderSettings(StrictModel):
    """all-MiniLM-L6-v2 (int8 ONNX) run locally; installed with Stockade, nothing downloaded."""

    type: Literal["minilm"] = "minilm"
    """Which embedder: ``minilm`` (local model), ``lexical`` (no model) or ``openai`` (a server)."""
    fallback: bool = True
    """Use the lexical embedder (with a warning) when the model's packages are not installed."""
    threads: int = Field(default=2, ge=1, le=64)
    """Threads onnxruntime uses for one batch of texts."""


class LexicalEmbedderSettings(StrictModel):
    """Hashed words and character trigrams: no model, weaker (no synonyms, no meaning)."""

    type: Literal["lexical"] = "lexical"
    """Which embedder: ``minilm`` (local model), ``lexical`` (no model) or ``openai`` (a server)."""
    dimension: int = Field(default=384, ge=16, le=4096)
    """Number of hash buckets (the embedding's length)."""


class OpenAIEmbedderSettings(StrictModel):
    """An OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    type: Literal["openai"] = "openai"
    """Which embedder: ``minilm`` (local model), ``lexical`` (no model) or ``openai`` (a server)."""
    model: str = "text-embedding-3-small"
    """Embedding model name the server knows."""
    base_url: str | None = None
    """Server URL; none: the ``model`` section's ``base_url``."""
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the key; none: the ``model`` section's ``api_key_env``."""
    dimensions: int | None = Field(default=None, ge=1, le=16384)
    """Length of the vectors, sent to the server as ``dimensions``; none: the model's own,
    learnt from one request when memory opens."""
    threshold: float = Field(default=0.3, ge=-1, le=1)
    """Cosine below which a memory is not relevant, for this model's vectors."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Deadline of one request."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a request after 429, 5xx, a timeout or a lost connection."""


EmbedderSettings = Annotated[
    MiniLMEmbedderSettings | LexicalEmbedderSettings | OpenAIEmbedderSettings,
    Field(discriminator="type"),
]
"""The embedder's settings, chosen by ``type``."""


class MemorySettings(StrictModel):
    """The agent's memory: recent notes of a run, and memories kept across runs (``memory.db``)."""

    enabled: bool = True
    """Recall memories into the prompt and remember finished runs."""
    namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
    """Memories are shared within a namespace; none: one per principal (no principal ever
    recalls another's)."""
    embedder: EmbedderSettings = Field(default_factory=MiniLMEmbedderSettings)
    """How texts become vectors; memories made by another embedder are not recalled."""
    top_k: int = Field(default=5, ge=1, le=50)
    """Most memories recalled into the prompt."""
    threshold: float | None = Field(default=None, ge=-1, le=1)
    """Cosine similarity a memory needs to be recalled; none: the embedder's own."""
    max_memories: int | None = Field(default=10_000, ge=1)
    """Memories kept per principal or namespace (the oldest go first); none: no limit."""
    max_age_days: float | None = Field(default=365.0, gt=0)
    """Memories older than this are deleted; none: kept whatever their age."""
    short_term_size: int = Field(default=32, ge=2, le=10_000)
    """Notes a run keeps; past it the oldest half is summarised into one."""
    max_prompt_chars: int = Field(default=2000, ge=200, le=100_000)
    """Longest memory section added to the system prompt."""


class MetricsSettings(StrictModel):
    """Prometheus metrics: recorded in each process's memory, served on ``/metrics``."""

    enabled: bool = True
    """Record metrics. False: every instrument does nothing and nothing is served."""
    serve: bool = False
    """Long-running commands (``stockade run``, ``stockade serve``, the demo) serve
    ``/metrics`` on ``host:port``; the ``--metrics-port`` flag of ``run`` and the demo also
    turns it on. (``stockade serve`` serves ``/metrics`` on its API port either way.)"""
    host: str = "127.0.0.1"
    """Address the metrics endpoint listens on; anything but loopback exposes it to the
    network (it carries no secrets, but tool and rule names)."""
    port: int = Field(default=9464, ge=0, le=65535)
    """Port of the metrics endpoint; 0: any free port (found by Prometheus through the
    discovery file in ``targets_dir``)."""
    targets_dir: ConfigPath | None = None
    """Where serving processes leave their discovery files (address and labels, readable by
    all); none: ``metrics/targets`` in the state directory. Only Stockade's user may enter
    the state directory, so a Prometheus running as another user (Debian's package, a
    container) needs a directory outside it."""


class LoggingSettings(StrictModel):
    """The process's log: text for people or JSON lines for a log pipeline."""

    format: Literal["text", "json"] = "text"
    """``json``: one object per line, with run id, call id, tool, decision and status keys
    (the gateway logs one line per call at INFO)."""
    level: Literal["debug", "info", "warning", "error"] | None = None
    """Lowest level written; none: ``info`` for JSON, ``warning`` for text."""


class TracingSettings(StrictModel):
    """OpenTelemetry traces of runs (GenAI conventions), exported over OTLP/HTTP.

    Needs the ``stockade[tracing]`` extra when enabled; off, nothing of it is imported."""

    enabled: bool = False
    """Export one trace per run: the agent, its model calls, its tool calls and their steps."""
    endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", pattern=r"^https?://[^\s/]+(/[^\s]*)?$"
    )
    """The OTLP/HTTP traces URL of the collector (its ``/v1/traces``)."""
    headers: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")],
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")],
    ] = Field(default_factory=dict)
    """Request headers for the collector: header name → the environment variable holding its
    value (a token stays out of the file)."""
    sampling_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of runs traced (decided once per run, from its trace id)."""
    capture_content: bool = False
    """Also record messages, tool arguments and tool outputs on the spans (they may hold
    secrets and personal data: off by default)."""
    service_name: str = Field(default="stockade", min_length=1, max_length=128)
    """The ``service.name`` resource attribute of the spans."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long one export request may take."""


class ServerSettings(StrictModel):
    """The HTTP API and the approval page."""

    host: str = "127.0.0.1"
    """Address the server listens on. Anything but loopback needs at least one API token."""
    port: int = Field(default=8787, ge=1, le=65535)
    """Port of the server."""
    tokens: ConfigPath | None = None
    """The server's database: API tokens (only their SHA-256 is kept) and which principal
    owns each run id; none: ``tokens.db`` in the state directory."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest request body accepted; larger ones are refused (413) before they are parsed."""
    max_json_depth: int = Field(default=32, ge=2, le=256)
    """Deepest nesting of arrays and objects accepted in a JSON body; deeper ones are
    refused (400) before they are parsed."""
    body_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Seconds a request's body may take to arrive whole once its headers are in; a slower
    one is refused (408), so a client trickling bytes holds no buffer and no worker."""
    self_approval: bool = True
    """Whether an approver may decide a request raised on their own behalf (the request's
    principal is the approver's); false: someone else must."""
    unauthenticated_loopback: bool = True
    """While no API token exists at all, a server on loopback serves requests without a token
    as the user running it, with every role (requests must name a loopback host, which
    defeats DNS rebinding); false: every request needs a token."""
    shutdown_grace_s: int = Field(default=10, ge=0, le=3600)
    """On shutdown, how long requests still open (calls waiting for approval) may finish
    before they are cancelled; their approval requests stay in the database."""
    mcp_path: str | None = Field(default="/mcp", pattern=r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
    """Where the server serves MCP (streamable HTTP) to clients with a caller token; none:
    not at all."""
    resume_runs: bool = True
    """At start, resume the agent runs a stopped orchestrator left unfinished (and no live
    process drives), and those whose lease a process this host cannot check (another boot,
    another host, another container's PID namespace) holds once that lease expires; at
    shutdown, suspend runs under way so the next start resumes them. False: runs under way
    are cancelled at shutdown and nothing is resumed."""
    max_runs_per_principal: int = Field(default=16, ge=1, le=10_000)
    """Agent runs one principal may have under way on this server at once; a start past it is
    refused (429) until one ends, so one token's loop of starts cannot take the server's
    model calls and sandboxes from everyone else."""
    run_lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    """How long the lease of a run the server drives lasts without a heartbeat (one every
    third of it): another process may resume a run this long after its driver stopped
    renewing it (at once when that driver was a process of this host and PID namespace that
    died)."""


# A DNS name in lower case whose last label is not a number (so never an IP address).
_HOST_NAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"


class SecretBinding(StrictModel):
    """Where a secret is sent: the requests of one sandbox profile to one host."""

    profile: str
    """The sandbox profile whose calls get the secret; it must allow egress to ``host``."""
    host: str = Field(pattern=_HOST_NAME, max_length=253)
    """The host (a DNS name in lower case, not a glob or an address) the secret is sent to,
    over HTTPS only; it must be in the profile's egress allowlist."""
    port: int = Field(default=443, ge=1, le=65535)
    """The HTTPS port."""
    principals: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    """Principal globs the secret is for (``[alice, "team-*"]``); absent: every caller."""
    ca_file: ConfigPath | None = None
    """PEM file of the CA certificates the proxy trusts when it connects to ``host`` (read at
    start), instead of the system's trust store: an internal API whose certificate a private
    CA issued. Absent: the system's trust store."""


class SecretSettings(StrictModel):
    """A credential the egress proxy adds to requests, so no sandbox, tool argument, prompt
    or audit record ever holds it (the audit log and the metrics name it, never its value).
    """

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the secret (the value never goes in this file)."""
    file: ConfigPath | None = None
    """File holding the secret (read at start; a final newline is dropped)."""
    header: str = Field(default="Authorization", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    """The request header that carries it."""
    format: str = Field(default="Bearer {secret}", pattern=r"^[^\r\n]*\{secret\}[^\r\n]*$")
    """The header's value, with ``{secret}`` where the secret goes."""
    bind: list[SecretBinding] = Field(min_length=1)
    """The (profile, host) pairs whose requests get the secret."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("give the secret's source as exactly one of env or file")
        return self


class StockadeConfig(StrictModel):
    """The whole platform's configuration (``stockade.yaml``)."""

    version: Literal[1] = 1
    """Format version of this file."""
    state_dir: ConfigPath = Field(default_factory=lambda: Path.home() / ".stockade")
    """Where the platform keeps workspaces, the audit log, approvals and limits."""
    policy: ConfigPath | None = None
    """The policy file; none: the shipped ``default.yaml``."""
    workspaces_dir: ConfigPath | None = None
    """Where runs' workspaces live (one directory per run); none: ``workspaces/`` in state_dir."""
    toolkits: tuple[str, ...] = BUILTIN_TOOLKITS
    """Importable toolkit packages whose tools the model may call."""
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    """Sandbox backend, default runtime and profiles."""
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    """Sandbox images."""
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """The audit log."""
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    """Approval requests and approvers."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Where rate limits and model budgets live (this host, or Redis for many)."""
    artifacts: ArtifactsSettings = Field(default_factory=ArtifactsSettings)
    """Caps on the artifacts tool calls leave under ``outputs/``."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    """The agent's model."""
    memory: MemorySettings = Field(default_factory=MemorySettings)
    """The agent's memory."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """Prometheus metrics."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    """The process's log format and level."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """HTTP API and approval page."""
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    """OpenTelemetry traces of runs, exported over OTLP/HTTP (off by default)."""
    secrets: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")], SecretSettings
    ] = Field(default_factory=dict)
    """Credentials by name, which the egress proxy adds to the requests of bound (profile,
    host) pairs; the sandbox, the model and the audit log never see their values."""

    @model_validator(mode="after")
    def _image_specs_configured(self) -> Self:
        for name, profile in self.sandbox.profiles.items():
            if profile.image_spec is not None and profile.image_spec not in self.images.specs:
                known = ", ".join(sorted(self.images.specs)) or "none"
                raise LocatedValueError(
                    f"image spec {profile.image_spec!r} is not in images.specs "
                    f"(configured: {known})",
                    ("sandbox", "profiles", name, "image_spec"),
                )
        return self

    @model_validator(mode="after")
    def _secrets_bound_to_allowed_hosts(self) -> Self:
        profiles = self.sandbox.effective_profiles()
        for name, secret in self.secrets.items():
            for index, binding in enumerate(secret.bind):
                where = ("secrets", name, "bind", index)
                profile = profiles.get(binding.profile)
                if profile is None:
                    raise LocatedValueError(
                        f"profile {binding.profile!r} is not configured; configured profiles: "
                        f"{', '.join(sorted(profiles))}",
                        (*where, "profile"),
                    )
                if profile.egress is None or not profile.egress.allows(binding.host, binding.port):
                    raise LocatedValueError(
                        f"{binding.host}:{binding.port} is not in the egress allowlist of "
                        f"profile {binding.profile!r}; a secret goes only where the profile "
                        "may connect",
                        (*where, "host"),
                    )
        return self

    @field_validator("toolkits", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # The environment gives one string: "toolkits.files,my_org.tools".
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("toolkits")
    @classmethod
    def _toolkits_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one toolkit")
        for name in value:
            # A toolkit is imported by name, and an external one is copied into the tools
            # image's library under it (a path: "../x" must not be one), which comes
            # before the standard library on the tools' PYTHONPATH.
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a Python package name (a.b.c)")
            if name.split(".")[0] in sys.stdlib_module_names:
                raise ValueError(f"{name!r} is a module of Python's standard library")
        return value

    @property
    def audit_path(self) -> Path:
        """The audit log's file."""
        return self.audit.path or self.state_dir / "audit.jsonl"

    @property
    def approvals_db(self) -> Path:
        """The approval requests' database."""
        return self.approvals.database or self.state_dir / "approvals.db"

    @property
    def limits_db(self) -> Path:
        """The database of rate limits and model budgets shared by the host's processes."""
        return self.state_dir / "limits.db"

    @property
    def tokens_db(self) -> Path:
        """The HTTP server's database: API tokens and run owners."""
        return self.server.tokens or self.state_dir / "tokens.db"

    @property
    def metrics_targets_dir(self) -> Path:
        """Where serving processes leave their discovery files for Prometheus."""
        return self.metrics.targets_dir or self.state_dir / "metrics" / "targets"

    @property
    def runs_dir(self) -> Path:
        """The runs' directories (execution logs, checkpoints, artifacts): one per run."""
        return self.state_dir / "runs"

    @property
    def workspaces_root(self) -> Path:
        """Where runs' workspaces live."""
        return self.workspaces_dir or self.state_dir / "workspaces"

    @property
    def audit_rotate_bytes(self) -> int | None:
        """The audit log's rotation size in bytes."""
        return None if self.audit.rotate_mb is None else self.audit.rotate_mb * _MiB
