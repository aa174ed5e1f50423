#!/usr/bin/env bash
# Builds a sandbox base root filesystem from Debian packages and writes it as
# a tar archive: the offline path, used when no registry can be reached.
#
#   build-rootfs.sh [--cache-dir DIR] OUTPUT.tar [PACKAGE...]
#   build-rootfs.sh --suite            (prints the Debian suite it builds)
#
# The root filesystem is Debian's minbase with Python 3 and CA certificates,
# plus the PACKAGEs named (the tools image adds nodejs; an image spec adds its
# own): one root filesystem per package set.
#
# The mirror is the host's own apt source unless STOCKADE_DEBIAN_MIRROR is set;
# the suite is STOCKADE_DEBIAN_SUITE (default: the host's codename).
# --cache-dir, an absolute directory, keeps the downloaded packages between
# builds (debootstrap checks each cached one against the mirror's checksum
# before use), so a second package set downloads only what it adds. The
# mirror's Release file must be signed by the suite's keyring
# (debian-archive-keyring): without one the build fails, never goes unchecked.
set -euo pipefail

suite="${STOCKADE_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
# A codename, never something debootstrap would read as an option.
[[ "$suite" =~ ^[a-z][a-z0-9-]*$ ]] || { echo "not a Debian suite: $suite (STOCKADE_DEBIAN_SUITE)" >&2; exit 2; }
if [ "${1:-}" = "--suite" ]; then
    printf '%s\n' "$suite"
    exit 0
fi
cache=()
if [ "${1:-}" = "--cache-dir" ]; then
    mkdir -p "${2:?--cache-dir needs a directory}"
    cache=("--cache-dir=$2")
    shift 2
fi

out="${1:?usage: build-rootfs.sh [--cache-dir DIR] OUTPUT.tar [PACKAGE...]}"
shift
packages="python3-minimal,python3,ca-certificates"
for package in "$@"; do
    # Names only: nothing that debootstrap could read as an option or a list.
    [[ "$package" =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || { echo "not a Debian package name: $package" >&2; exit 2; }
    packages="$packages,$package"
done

host_mirror() {
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list)
    fi
    printf '%s' "$uri"
}

mirror="${STOCKADE_DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources; set STOCKADE_DEBIAN_MIRROR" >&2; exit 1; }
[[ "$mirror" =~ ^[a-z][a-z0-9+.-]*:[^[:space:]]+$ ]] || { echo "not a mirror URL: $mirror" >&2; exit 2; }

work="$(mktemp -d /var/tmp/stockade-rootfs.XXXXXX)"
cleanup() {
    # debootstrap mounts /proc, /sys and binds of the host's /dev inside the root
    # filesystem, and a debootstrap stopped hard leaves them: unmount them first, and
    # never cross a mount while removing (that would reach into the host's).
    awk -v under="$work/" 'index($2, under) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# Stopped (Ctrl-C, the builder's deadline): exit, so that the cleanup runs. debootstrap,
# stopped by the same signal to the process group, unmounts what it mounted first.
trap 'exit 130' INT
trap 'exit 143' TERM

echo "debootstrap $suite (minbase + $packages)" >&2
# --force-check-gpg: without the suite's keyring, debootstrap would warn (into the log
# nobody reads) and install whatever the mirror, often plain http, served.
debootstrap --variant=minbase --force-check-gpg "${cache[@]}" --include="$packages" \
    "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Nothing in a sandbox installs packages: drop the caches and documentation.
rm -rf "$work/rootfs/var/cache/apt/"* "$work/rootfs/var/lib/apt/lists/"* \
       "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"* \
       "$work/rootfs/usr/share/locale/"* "$work/rootfs/var/log/"*
tar --numeric-owner -C "$work/rootfs" -cf "$out" .
