#!/usr/bin/env bash
# Idempotent host setup for Stockade: Docker engine (+ gVisor), the virtual
# environment, and the sandbox images. Safe to run any number of times; a
# second run only checks and changes nothing.
#
#   scripts/setup.sh            set everything up
#   scripts/setup.sh test       set up, then run the whole test suite
#   scripts/setup.sh demo       set up, then run the demo (the main job)
#   scripts/setup.sh engine     only make sure the Docker engine runs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STOCKADE_VENV:-$ROOT/.venv}"
DOCKERD_LOG="${STOCKADE_DOCKERD_LOG:-/var/log/stockade-dockerd.log}"
DAEMON_JSON="${STOCKADE_DAEMON_JSON:-/etc/docker/daemon.json}"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "host setup needs root (installs packages, starts dockerd); run as root"
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v runsc >/dev/null || missing+=(runsc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    # The base images' debootstrap checks the mirror's signature, and fails without these
    # (recommended by debootstrap, so --no-install-recommends below would skip them).
    command -v gpgv >/dev/null || missing+=(gpgv)
    [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
    # promtool and amtool check the metrics, alert rules and Alertmanager
    # example; the observability tests also run a real Prometheus.
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
    # The approval page's browser tests drive a headless chromium.
    command -v chromium >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    # The cluster tests put each Ray node in a network namespace (ip, nsenter).
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nsenter >/dev/null || missing+=(util-linux)
    # The Redis limit store's tests run a real redis-server on 127.0.0.1.
    command -v redis-server >/dev/null || missing+=(redis-server)
    # stockade run's live output tail is tested on a real terminal: tmux.
    command -v tmux >/dev/null || missing+=(tmux)
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the packages from starting services themselves; this
    # script starts dockerd with the flags it wants.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure_daemon() {
    local runsc_path merged
    runsc_path="$(command -v runsc)"
    # Our two runtimes merged into the file that is there: the operator's own settings
    # (registry mirrors, log driver, data-root, other runtimes) stay as they are. A
    # file that is not JSON is left alone: dockerd would not start on it either.
    # runsc-egress may connect to host Unix sockets (never create them): only
    # containers of egress profiles use it, and their one mount is the egress
    # proxy's socket directory.
    merged="$(python3 - "$DAEMON_JSON" "$runsc_path" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as file:
        current = json.load(file)
except FileNotFoundError:
    current = {}
except ValueError as exc:
    sys.exit(f"{path} is not JSON ({exc}); fix it, or remove it to have it written")
if not isinstance(current, dict) or not isinstance(current.get("runtimes", {}), dict):
    sys.exit(f"{path}: expected a JSON object whose runtimes is an object")
wanted = {**current, "runtimes": {
    **current.get("runtimes", {}),
    "runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
    "runsc-egress": {"path": runsc, "runtimeArgs": ["--network=none", "--host-uds=open"]},
}}
if wanted != current or not os.path.exists(path):
    print(json.dumps(wanted, indent=2))
PY
)" || die "cannot register the gVisor runtimes in $DAEMON_JSON"
    [ -n "$merged" ] || return 0
    need_root
    log "registering runsc and runsc-egress as Docker runtimes in $DAEMON_JSON"
    mkdir -p "$(dirname "$DAEMON_JSON")"
    # Written whole or not at all: a half-written file would keep dockerd from starting.
    printf '%s\n' "$merged" >"$DAEMON_JSON.stockade-new"
    mv -f "$DAEMON_JSON.stockade-new" "$DAEMON_JSON"
    if docker_answers; then
        # dockerd reads the runtimes on reload (SIGHUP); no restart needed.
        pkill -HUP -x dockerd || true
    fi
}

docker_answers() {
    timeout 5 docker info >/dev/null 2>&1
}

# The engine logs every container it creates and removes (~1 KB each: one run
# of the test suite adds ~60 MB). Whenever this script sees the log past this
# size it keeps a copy as $DOCKERD_LOG.1 and empties it: the engine started
# here holds it open for appending, so it writes on at the new end (lines
# written between the copy and the emptying are lost, as with logrotate's
# copytruncate).
DOCKERD_LOG_ROTATE_BYTES=$((64 * 1024 * 1024))

rotate_dockerd_log() {
    local size
    size=$(stat -c %s "$DOCKERD_LOG" 2>/dev/null || echo 0)
    if [ "$size" -gt "$DOCKERD_LOG_ROTATE_BYTES" ] && [ -w "$DOCKERD_LOG" ]; then
        cp --sparse=always -f "$DOCKERD_LOG" "$DOCKERD_LOG.1"
        : >"$DOCKERD_LOG"
        log "rotated the engine's log ($((size / 1024 / 1024)) MB) to $DOCKERD_LOG.1"
    fi
}

start_dockerd() {
    rotate_dockerd_log
    if docker_answers; then
        return 0
    fi
    need_root
    log "starting dockerd (no bridge, no iptables; log: $DOCKERD_LOG)"
    # Sandboxes never get a network: the engine itself is started without a
    # bridge so no container can be given one by mistake.
    nohup setsid dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local deadline=$((SECONDS + 60))
    until docker_answers; do
        [ $SECONDS -lt $deadline ] || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
        sleep 0.5
    done
    log "dockerd is up ($(docker version --format '{{.Server.Version}}'))"
}

setup_venv() {
    local stamp="$VENV/.stockade-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    # Reinstall only when the project's metadata changed since the last install.
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
        return 0
    fi
    log "installing stockade and its dev dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
    touch "$stamp"
}

# The tracing tests' OTLP receiver, Phoenix, in a virtual environment of its own
# (its dependencies are many); tests/tracing/conftest.py makes it too when missing.
setup_phoenix() {
    local dir="${STOCKADE_TEST_CACHE:-$HOME/.cache/stockade}/phoenix-venv"
    [ -x "$dir/bin/phoenix" ] && return 0
    log "installing arize-phoenix into $dir (the tracing tests' receiver)"
    python3 -m venv --clear "$dir"
    "$dir/bin/python" -m pip install -q arize-phoenix
}

build_images() {
    "$VENV/bin/stockade" images build
}

main() {
    # A mistyped command fails before minutes of installs and builds, not after them.
    case "${1:-}" in
        ""|test|demo|engine) ;;
        *) die "unknown command '$1' (expected: test, demo, engine, or nothing)" ;;
    esac
    install_packages
    configure_daemon
    start_dockerd
    # `engine`: only the engine (tests restart it this way after stopping it).
    [ "${1:-}" = engine ] && return 0
    setup_venv
    # The tests' Phoenix venv downloads while the images build (network against
    # CPU): on a fresh machine that overlap is ~2 minutes of CI.
    local phoenix_pid=""
    if [ "${1:-}" = test ]; then
        # In a process group of its own (job control on for this one job): a failed
        # build or an interrupt stops pip with it, not only the subshell waiting for it.
        set -m
        setup_phoenix &
        phoenix_pid=$!
        set +m
        trap 'kill -TERM -- "-$phoenix_pid" 2>/dev/null || true' EXIT
    fi
    build_images || die "building the images failed (see the lines above)"
    if [ -n "$phoenix_pid" ]; then
        wait "$phoenix_pid" || die "installing arize-phoenix failed (see the lines above)"
        trap - EXIT
    fi
    case "${1:-}" in
        "") ;;
        test) shift; exec "$ROOT/scripts/run-tests.sh" "$@" ;;
        demo) shift; exec "$VENV/bin/stockade" demo "$@" ;;
    esac
}

# Sourced (by the tests, to call one step), it only defines the steps.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
