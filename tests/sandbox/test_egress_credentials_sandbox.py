"""The canary hunt: code in a real sandbox looks everywhere for a secret its calls use.

A secret (the canary) is bound to ``bound.test`` for the ``http`` profile. The
origin is an HTTPS server on 127.0.0.1 with its own certificate, which the
proxy trusts for the test. Code running in the sandbox dumps its environment,
its files, every process's environment and command line, the proxy's answers,
an echo of the headers the bound host received, a redirect from the bound host
to an unbound one, and a request to the unbound host naming the bound one:
the canary appears in none of it, nor in the audit log or the metrics, while
the bound host receives it on every request. The unbound host is tunnelled:
the certificate the sandbox sees is the origin's own.
"""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import docker
import pytest
from prometheus_client import generate_latest

from orchestrator.audit import verify
from orchestrator.config import load_config
from orchestrator.platform import Platform, image_builder
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox._egress_tls import Interception
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing import FixedResolver, LoopbackOnlyConnector
from orchestrator.testing.egress import HttpRequest
from orchestrator.testing.tls import TlsOrigin
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = [pytest.mark.docker, pytest.mark.adversarial]

CANARY = "sk-canary-4f1d8e2b9a7c6d5e"
BOUND, UNBOUND = "bound.test", "unbound.test"

HUNT = textwrap.dedent(
    """
    import glob, json, os, socket, ssl, sys, urllib.request

    found = {"environ": dict(os.environ)}

    def read(path, limit=1 << 15):
        try:
            with open(path, "rb") as handle:
                return handle.read(limit).decode("utf-8", "replace")
        except OSError as error:
            return f"<{error}>"

    files = {}
    for root in ("/run", "/tmp", "/workspace", "/etc", "/home", "/var", "/opt", "/root"):
        for folder, dirs, names in os.walk(root):
            # The image's own library (toolkits and their wheels, read-only, the same for
            # every deployment): thousands of files, more than the workspace can take back.
            dirs[:] = [d for d in dirs if os.path.join(folder, d) != "/opt/stockade/lib"]
            for name in names:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    files[path] = read(path)
    found["files"] = files
    found["proc"] = {
        path: read(path) for pattern in ("/proc/*/environ", "/proc/*/cmdline", "/proc/*/maps")
        for path in glob.glob(pattern)
    }

    # The sandbox's own TLS trust (the bundle the gate mounted), plus the origin for the
    # tunnelled host, so urllib can follow a redirect there.
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ORIGIN_PEM)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def fetch(url, headers=None):
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with opener.open(request, timeout=20) as response:
                return {"status": response.status, "url": response.url,
                        "headers": dict(response.headers), "body": response.read().decode()}
        except urllib.error.HTTPError as error:
            return {"status": error.code, "headers": dict(error.headers),
                    "body": error.read().decode("utf-8", "replace")}
        except Exception as error:
            return {"error": repr(error)}

    found["echo"] = fetch(f"https://bound.test:{PORT}/echo", {"Authorization": "Bearer mine"})
    found["redirected"] = fetch(f"https://bound.test:{PORT}/redirect")
    found["unbound named bound"] = fetch(
        f"https://unbound.test:{PORT}/echo", {"Host": f"bound.test:{PORT}"}
    )
    found["refused"] = fetch(f"https://elsewhere.test:{PORT}/")

    def tunnel(host, sni, verify):
        proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
        raw = socket.create_connection(("127.0.0.1", int(proxy[1])), timeout=20)
        raw.sendall(f"CONNECT {host}:{PORT} HTTP/1.1\\r\\n\\r\\n".encode())
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            head += raw.recv(1)
        ctx = ssl.create_default_context() if verify else ssl._create_unverified_context()
        tls = ctx.wrap_socket(raw, server_hostname=sni)
        return tls

    try:
        tunnel("bound.test", "unbound.test", True)
        found["sni mismatch"] = "handshake succeeded"
    except Exception as error:
        found["sni mismatch"] = repr(error)
    import hashlib
    with tunnel("unbound.test", "unbound.test", False) as tls:
        found["unbound certificate"] = hashlib.sha256(tls.getpeercert(True)).hexdigest()
    # Everything found goes back through the workspace (too much for the output).
    with open("found.json", "w") as handle:
        json.dump(found, handle)
    print(len(json.dumps(found)), "bytes found")
    """
)


def origin_app(port_box: list[int]) -> object:
    def app(request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        if request.path == "/redirect":
            return 302, {"Location": f"https://{UNBOUND}:{port_box[0]}/echo"}, b""
        auth = request.headers.get("authorization", "").encode()
        body = b"\n".join(
            [json.dumps(request.headers).encode(), base64.b64encode(auth),
             quote(auth.decode(), safe="").encode()]
        )  # fmt: skip
        return 200, {"X-Seen": request.headers.get("authorization", "")}, body

    return app


@pytest.fixture
def origin() -> Iterator[tuple[TlsOrigin, int]]:
    port_box: list[int] = []
    server = TlsOrigin([BOUND, UNBOUND], origin_app(port_box))  # type: ignore[arg-type]
    with server.serve() as port:
        port_box.append(port)
        yield server, port


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode().rstrip("="), quote(secret, safe="")]


async def test_no_canary_reaches_the_sandbox_and_the_bound_host_gets_it(
    tmp_path: Path,
    docker_client: docker.DockerClient,
    images: ImageBuilder,
    no_leaks: None,
    runtime: str,
    origin: tuple[TlsOrigin, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, port = origin
    monkeypatch.setenv("STOCKADE_TEST_CANARY", CANARY)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ndefault: deny\nrules:\n"
        "  - {name: hunt, tools: python.run, decision: allow, sandbox_profile: http}\n"
        "  - {name: fetch, tools: http.fetch, decision: allow}\n"
    )
    config = tmp_path / "stockade.yaml"
    state = tmp_path / "state"
    config.write_text(
        textwrap.dedent(
            f"""
            state_dir: {state}
            policy: {policy}
            toolkits: [toolkits.http, toolkits.python]
            sandbox:
              runtime: {runtime}
              profiles:
                http:
                  pool_size: 0
                  loosen: [egress]
                  egress:
                    allow: ['{BOUND}:{port}', '{UNBOUND}:{port}']
                    allow_networks: [127.0.0.1/32]
            secrets:
              canary:
                env: STOCKADE_TEST_CANARY
                bind: [{{profile: http, host: {BOUND}, port: {port}, ca_file: origin-ca.pem}}]
            """
        )
    )
    # The origin's certificate is in no system store: the binding's ca_file
    # (beside the configuration) is what the proxy trusts for it.
    (tmp_path / "origin-ca.pem").write_bytes(server.certificate_pem)
    loaded = load_config(config, environ={})
    resolver = FixedResolver({BOUND: ["127.0.0.1"], UNBOUND: ["127.0.0.1"]})
    connector = LoopbackOnlyConnector()
    interception = Interception(ca=DeploymentCA.open(state, [BOUND]), profiles=frozenset({"http"}))
    backend = DockerBackend(
        docker_client,
        images=image_builder(loaded.config, docker_client),
        reap_on_start=False,
        egress_gates=EgressGates(resolver=resolver, connector=connector, interception=interception),
    )
    async with Platform.open(loaded, backend=backend) as platform:
        hunt = await platform.gateway.call(
            ToolCall(
                id="hunt",
                name="python.run",
                arguments={
                    "code": f"PORT = {port}\nORIGIN_PEM = {server.certificate_pem.decode()!r}\n"
                    + HUNT,
                    "timeout_s": 25,
                },
                run_id="r",
                principal="ada",
            )
        )
        fetched = await platform.gateway.call(
            ToolCall(
                id="fetch",
                name="http.fetch",
                arguments={"url": f"https://{BOUND}:{port}/echo"},
                run_id="r",
                principal="ada",
            )
        )
        exposition = generate_latest(platform.metrics.registry).decode()
    assert connector.violations == [] and resolver.unknown == []
    assert hunt.status is ToolStatus.OK, hunt
    assert fetched.status is ToolStatus.OK, fetched
    result = json.loads(hunt.output or "{}")
    assert result["exit_code"] == 0, result["stderr"][-3000:]
    dumped = (state / "workspaces" / "r" / "found.json").read_text()
    found = json.loads(dumped)
    everything = dumped + (hunt.output or "") + (fetched.output or "")
    for form in forms(CANARY):
        assert form not in everything, f"the sandbox found the canary ({form!r})"

    # The sandbox trusted the proxy's leaf for the bound host, through the mounted CA.
    assert found["environ"]["SSL_CERT_FILE"] == "/run/stockade/ca-bundle.pem"
    assert not any("ca-key" in path for path in found["files"])
    assert found["echo"]["status"] == 200, found["echo"]
    assert "[REDACTED]" in found["echo"]["body"]
    assert found["echo"]["headers"]["x-seen"] == "Bearer [REDACTED]"
    assert found["redirected"]["status"] == 200 and found["redirected"]["url"].startswith(
        f"https://{UNBOUND}:"
    )
    assert found["unbound named bound"]["status"] == 200
    assert "403" in json.dumps(found["refused"]) or "error" in found["refused"]
    assert "Error" in found["sni mismatch"] or "error" in found["sni mismatch"].lower()
    assert found["unbound certificate"] == server.certificate_sha256, "tunnelled, not intercepted"
    assert json.loads(json.loads(fetched.output or "{}")["body"].split("\n")[0])

    # The bound host got the secret on every request to it; the unbound one never did.
    by_host = [
        (r.headers.get("host", "").split(":")[0], r.headers.get("authorization"))
        for r in server.requests
    ]
    bound = [auth for host, auth in by_host if host == BOUND]
    assert bound and all(auth == f"Bearer {CANARY}" for auth in bound[:2])
    unbound_requests = [
        r for r in server.requests if r.path == "/echo" and "authorization" not in r.headers
    ]
    assert len(unbound_requests) >= 2, "the redirect and the request naming the bound host"
    for request in server.requests:
        if request.headers.get("authorization"):
            assert request.headers["host"].startswith(f"{BOUND}:")

    # The audit log and the metrics name the secret, never its value.
    log = state / "audit.jsonl"
    text = log.read_text()
    for form in forms(CANARY):
        assert form not in text and form not in exposition
    records = [json.loads(line) for line in text.splitlines()]
    (fetch_record,) = [r for r in records if r["event"] == "call" and r["call_id"] == "fetch"]
    assert [e.get("secret") for e in fetch_record["egress"]] == ["canary"]
    assert 'stockade_egress_credentials_total{profile="http",secret="canary"}' in exposition
    assert verify(log).ok


async def test_the_platform_makes_its_ca_on_first_start(
    tmp_path: Path, images: ImageBuilder, no_leaks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKADE_TEST_CANARY", CANARY)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\ntoolkits: [toolkits.http]\n"
        "sandbox:\n  profiles:\n    http:\n      pool_size: 0\n      loosen: [egress]\n"
        "      egress: {allow: [api.example.org]}\n"
        "secrets:\n  canary:\n    env: STOCKADE_TEST_CANARY\n"
        "    bind: [{profile: http, host: api.example.org}]\n"
    )
    directory = tmp_path / "state" / "egress-ca"
    assert not directory.exists()
    async with Platform.open(load_config(config, environ={}), pools=False):
        pass
    assert (directory / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    first = (directory / "ca.pem").read_bytes()
    async with Platform.open(load_config(config, environ={}), pools=False):
        pass
    assert (directory / "ca.pem").read_bytes() == first, "kept across starts"
