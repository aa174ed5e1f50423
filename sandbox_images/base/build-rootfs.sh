#!/usr/bin/env bash
# Builds the sandbox base root filesystem from Debian packages and writes it
# as a tar archive: the offline path, used when no registry can be reached.
#
#   build-rootfs.sh OUTPUT.tar
#
# The mirror is the host's own apt source unless STOCKADE_DEBIAN_MIRROR is set;
# the suite is STOCKADE_DEBIAN_SUITE (default: the host's codename).
set -euo pipefail

out="${1:?usage: build-rootfs.sh OUTPUT.tar}"
packages="python3-minimal,python3,ca-certificates"

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

suite="${STOCKADE_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
mirror="${STOCKADE_DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources; set STOCKADE_DEBIAN_MIRROR" >&2; exit 1; }

work="$(mktemp -d /var/tmp/stockade-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT

echo "debootstrap $suite (minbase + $packages)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Nothing in a sandbox installs packages: drop the caches and documentation.
rm -rf "$work/rootfs/var/cache/apt/"* "$work/rootfs/var/lib/apt/lists/"* \
       "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"* \
       "$work/rootfs/usr/share/locale/"* "$work/rootfs/var/log/"*
tar --numeric-owner -C "$work/rootfs" -cf "$out" .
