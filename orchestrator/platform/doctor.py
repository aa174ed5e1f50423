"""``stockade doctor``: is this machine and this configuration ready to run tool calls?

Each check says ok, or what failed and the one command that fixes it. Checks
that depend on a failed one are reported as skipped, not as a second failure.
A warning is a check that passed but should be seen to (a base image past
``images.base_max_age_days``), with the command that fixes it: it does not
make the doctor fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import docker

from orchestrator.assets import shipped
from orchestrator.config import LoadedConfig
from orchestrator.errors import ConfigError, InfrastructureError, StockadeError
from orchestrator.platform._doctor_cluster import check_cluster
from orchestrator.platform._limits import redis_password
from orchestrator.platform._parts import (
    CheckedConfiguration,
    build_registry,
    check_profiles,
    image_builder,
    load_configured_approvers,
    load_configured_policy,
    policy_file,
)
from orchestrator.platform._platform import Platform
from orchestrator.policy import RedisLimitStore
from orchestrator.sandbox.engine import connect_engine
from orchestrator.sandbox.execution import ExecRequest, ExecStatus

__all__ = ["Check", "diagnose"]

Outcome = Literal["ok", "warning", "failed", "skipped"]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Check:
    """One line of the doctor's report."""

    name: str
    """What was checked."""
    outcome: Outcome
    """ok; warning (it works, but should be seen to; not a failure); failed; or skipped
    (something it depends on failed)."""
    detail: str = ""
    """What was found."""
    fix: str = ""
    """The command that fixes a failure or a warning."""


def _setup_command() -> str:
    """How this installation starts the engine: the checkout's setup script, else dockerd."""
    script = shipped("policies").resolve().parent / "scripts" / "setup.sh"
    if script.is_file():
        return f"bash {script}"
    return "dockerd --bridge=none --iptables=false &  (or your distribution's docker service)"


class _Doctor:
    def __init__(self, loaded: LoadedConfig, config_flag: str) -> None:
        self.loaded = loaded
        self.settings = loaded.config
        self.config_flag = config_flag
        self.checks: list[Check] = []

    def ok(self, name: str, detail: str) -> None:
        self.checks.append(Check(name=name, outcome="ok", detail=detail))

    def failed(self, name: str, detail: str, fix: str) -> None:
        self.checks.append(Check(name=name, outcome="failed", detail=detail, fix=fix))

    def warning(self, name: str, detail: str, fix: str) -> None:
        self.checks.append(Check(name=name, outcome="warning", detail=detail, fix=fix))

    def skipped(self, name: str, because: str) -> None:
        self.checks.append(Check(name=name, outcome="skipped", detail=because))

    def attempt(
        self, name: str, fix: str, step: Callable[[], T], detail: Callable[[Any], str]
    ) -> tuple[bool, T | None]:
        """Run ``step``; a project error is this check's failure."""
        try:
            value = step()
        except StockadeError as exc:
            self.failed(name, str(exc), fix)
            return False, None
        self.ok(name, detail(value))
        return True, value

    def state_dir(self) -> None:
        state = self.settings.state_dir
        try:
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=state, prefix=".doctor-"):
                pass
        except OSError as exc:
            self.failed(
                "state directory writable",
                f"{state}: {exc.strerror}",
                f"mkdir -p {state} && chown {os.getuid()} {state}",
            )
            return
        self.ok("state directory writable", str(state))
        self.state_files_private()

    def state_files_private(self) -> None:
        """The databases and logs (approval requests hold calls' arguments, ``runs.db`` the
        runs' conversations) are readable by this user alone, as Stockade now makes them."""
        settings = self.settings
        state = settings.state_dir
        named = [settings.audit_path, settings.approvals_db, settings.tokens_db]
        found = {*named, *state.glob("*.db"), *state.glob("*.jsonl*"),
                 *settings.audit_path.parent.glob(f"{settings.audit_path.name}.*")}  # fmt: skip
        found = {path for path in found if path.is_file() and not path.is_symlink()}
        open_to_others = sorted(str(path) for path in found if path.stat().st_mode & 0o077)
        if open_to_others:
            self.failed(
                "state files private",
                f"readable or writable by others: {', '.join(open_to_others)}",
                f"chmod 600 {' '.join(open_to_others)}",
            )
            return
        self.ok("state files private", f"{len(found)} files, 0600")

    def limit_store(self) -> None:
        """A Redis limit store answers (the SQLite default is the state directory's)."""
        limits = self.settings.limits
        if limits.store == "sqlite":
            return
        name = "limit store reachable"
        try:
            password = redis_password(limits)
        except ConfigError as exc:
            self.failed(name, str(exc), f"export {limits.password_env}=<Redis's password>")
            return
        try:
            store = RedisLimitStore(
                limits.store,
                password=password,
                key_prefix=limits.key_prefix,
                timeout_s=limits.timeout_s,
            )
        except StockadeError as exc:
            self.failed(name, str(exc), "pip install 'stockade[redis]'")
            return
        try:
            store.client.ping()
            version = store.client.info("server").get("redis_version", "?")
        except Exception as exc:  # the client's errors, whatever they are, are the answer
            self.failed(
                name,
                f"{store.name}: {type(exc).__name__}: {exc}",
                f"start Redis at {store.name}, or set limits.store: sqlite (one host only)",
            )
            return
        finally:
            store.close()
        self.ok(name, f"{store.name} (Redis {version})")

    def configuration(self) -> CheckedConfiguration | None:
        check = f"stockade config check {self.loaded.file}" if self.loaded.file else ""
        _, registry = self.attempt(
            "toolkits load",
            check or "set toolkits in stockade.yaml to importable packages",
            lambda: build_registry(self.loaded),
            lambda r: f"{len(r.tools())} tools from {', '.join(self.settings.toolkits)}",
        )
        source = policy_file(self.settings)
        _, policy = self.attempt(
            "policy loads",
            f"stockade policy check {source}",
            lambda: load_configured_policy(self.settings),
            lambda p: f"{source}: {len(p.rules)} rules",
        )
        _, approvers = self.attempt(
            "approvers load",
            f"fix the approvers file {self.settings.approvals.approvers}",
            lambda: load_configured_approvers(self.settings),
            lambda a: (
                f"{self.settings.approvals.approvers}: {len(a.auto)} auto rules"
                if self.settings.approvals.approvers
                else "none configured (people decide)"
            ),
        )
        profiles = self.settings.sandbox.effective_profiles()
        if registry is None or policy is None or approvers is None:
            self.skipped(
                "profiles named by tools and rules exist", "the configuration did not load"
            )
            return None
        fits, _ = self.attempt(
            "profiles named by tools and rules exist",
            check or "add the profile under sandbox.profiles in stockade.yaml",
            lambda: check_profiles(self.loaded, registry, policy, profiles),
            lambda _: ", ".join(sorted(profiles)),
        )
        if not fits:
            return None
        return CheckedConfiguration(
            registry=registry, policy=policy, approvers=approvers, profiles=profiles
        )

    def engine(self) -> docker.DockerClient | None:
        return self.attempt(
            "engine answers",
            _setup_command(),
            connect_engine,
            lambda client: f"Docker {client.version().get('Version', '?')}",
        )[1]

    def runtimes(self, client: docker.DockerClient) -> bool:
        profiles = self.settings.sandbox.effective_profiles().values()
        wanted = sorted({p.runtime for p in profiles} | {
            "runsc-egress" for p in profiles if p.runtime == "runsc" and p.egress is not None
        })  # fmt: skip
        registered = set(client.info().get("Runtimes", {}))
        missing = [name for name in wanted if name not in registered]
        if missing:
            self.failed(
                "runtimes registered",
                f"{', '.join(missing)} not registered with the engine "
                f"(registered: {', '.join(sorted(registered))})",
                _setup_command(),
            )
            return False
        self.ok("runtimes registered", ", ".join(wanted))
        return True

    def images(self, client: docker.DockerClient) -> bool:
        builder = image_builder(self.settings, client)
        names = sorted({p.image for p in self.settings.sandbox.effective_profiles().values()})
        found: list[str] = []
        for name in names:
            try:
                tag = builder.resolve(name)
                builder.image_id(tag)
            except StockadeError as exc:
                self.failed(
                    "images built and current",
                    f"{name}: {exc}",
                    f"stockade images build{self._flag()}",
                )
                return False
            found.append(tag)
        self.ok("images built and current", ", ".join(found))
        return True

    def base_age(self, client: docker.DockerClient) -> None:
        """How old the bases of the profiles' images are: a base keeps the packages of the
        day it was built, so Debian's security updates since then are not in it."""
        name = "base images recent"
        builder = image_builder(self.settings, client)
        images = sorted({p.image for p in self.settings.sandbox.effective_profiles().values()})
        bases: dict[str, list[str]] = {}
        for image in images:
            base = builder.base_of(image)
            if base is not None:
                bases.setdefault(base, []).append(image)
        if not bases:
            self.ok(name, "no profile's image is built on a Stockade base")
            return
        now = datetime.now(UTC)
        limit = self.settings.images.base_max_age_days
        lines, old = [], []
        for base, on_it in sorted(bases.items()):
            try:
                created = builder.created(base)
            except StockadeError as exc:
                self.failed(name, f"{base}: {exc}", f"stockade images build{self._flag()}")
                return
            days = (now - created).total_seconds() / 86400
            lines.append(
                f"{base} (under {', '.join(on_it)}) built {created:%Y-%m-%d}, {int(days)} days ago"
            )
            if limit is not None and days > limit:
                old.append(base)
        detail = "; ".join(lines)
        if old:
            self.warning(
                name,
                f"{detail}. Older than images.base_max_age_days ({limit}): {', '.join(old)}; "
                "Debian's security updates published since are not in the sandboxes",
                f"stockade images build --refresh-base{self._flag()}",
            )
        else:
            self.ok(name, detail)

    def _flag(self) -> str:
        """The configuration flag for a fix command, with its leading blank."""
        return f" {self.config_flag}" if self.config_flag else ""

    async def containers(self, checked: CheckedConfiguration) -> None:
        async with Platform.open(self.loaded, pools=False) as platform:
            for name, profile in platform.profiles.items():
                label = f"profile {name} starts a container ({profile.runtime})"
                try:
                    result = await platform.sandbox.execute(
                        ExecRequest(argv=("true",), timeout_s=30), profile
                    )
                except ConfigError as exc:  # the engine cannot run this profile
                    self.failed(label, str(exc), f"stockade config check {self.loaded.file or ''}")
                    continue
                except InfrastructureError as exc:
                    self.failed(label, str(exc), _setup_command())
                    continue
                if result.status is ExecStatus.OK:
                    self.ok(label, f"{result.duration_s * 1000:.0f} ms")
                else:
                    self.failed(label, f"{result.status.value}: {result.message}", _setup_command())


async def diagnose(loaded: LoadedConfig, *, config_flag: str = "") -> list[Check]:
    """Run every check against ``loaded``; ``config_flag`` is repeated in the fix commands."""
    doctor = _Doctor(loaded, config_flag)
    doctor.state_dir()
    await asyncio.to_thread(doctor.limit_store)
    checked = doctor.configuration()
    cluster = doctor.settings.sandbox.ray
    if doctor.settings.sandbox.engine == "ray" and cluster is not None:
        # The cluster's hosts run the calls: their engines are checked, not this machine's.
        hosts_ok = await check_cluster(
            loaded,
            cluster,
            ok=lambda name, detail, _: doctor.ok(name, detail),
            failed=doctor.failed,
            skipped=doctor.skipped,
        )
        if checked is None or not hosts_ok:
            doctor.skipped("profiles start containers", "an earlier check failed")
            return doctor.checks
        await doctor.containers(checked)
        return doctor.checks
    client = await asyncio.to_thread(doctor.engine)
    if client is None:
        for name in (
            "runtimes registered",
            "images built and current",
            "base images recent",
            "profiles start containers",
        ):
            doctor.skipped(name, "the engine does not answer")
        return doctor.checks
    with contextlib.closing(client):
        runtimes_ok = await asyncio.to_thread(doctor.runtimes, client)
        images_ok = await asyncio.to_thread(doctor.images, client)
        if images_ok:
            await asyncio.to_thread(doctor.base_age, client)
        else:
            doctor.skipped("base images recent", "the images are not built")
    if checked is None or not images_ok or not runtimes_ok:
        doctor.skipped("profiles start containers", "an earlier check failed")
        return doctor.checks
    try:
        await doctor.containers(checked)
    except ConfigError as exc:
        doctor.failed("profiles start containers", str(exc), "stockade config check FILE")
    return doctor.checks
