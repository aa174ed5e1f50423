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
#
# debootstrap installs the suite as its last point release left it: the fixes
# Debian published since are in two other suites, SUITE-updates (on the same
# mirror) and SUITE-security (on the security archive: the host's apt source
# for it, else STOCKADE_DEBIAN_SECURITY_MIRROR, default
# http://deb.debian.org/debian-security). Both are applied (apt-get upgrade in
# the root filesystem, signatures checked as apt always does), and a build
# that cannot fetch them fails. unstable (sid) has neither suite;
# STOCKADE_DEBIAN_SECURITY_MIRROR=none leaves the security suite out, for a
# mirror that has none (the base then lacks Debian's security updates).
set -euo pipefail

suite="${STOCKADE_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
# A codename, never something debootstrap would read as an option.
[[ "$suite" =~ ^[a-z][a-z0-9-]*$ ]] || { echo "not a Debian suite: $suite (STOCKADE_DEBIAN_SUITE)" >&2; exit 2; }
if [ "${1:-}" = "--suite" ]; then
    printf '%s\n' "$suite"
    exit 0
fi
cache=()
cache_dir=""
if [ "${1:-}" = "--cache-dir" ]; then
    cache_dir="${2:?--cache-dir needs a directory}"
    mkdir -p "$cache_dir"
    cache=("--cache-dir=$cache_dir")
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

# The URI of the host's apt source for suite $1 (deb822 stanzas, then one-line entries).
host_source_of() {
    local uri=""
    shopt -s nullglob
    local stanzas=(/etc/apt/sources.list.d/*.sources) lines=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    if [ "${#stanzas[@]}" -gt 0 ]; then
        uri=$(awk -v want="$1" 'BEGIN { RS = "" } {
            uri = ""; found = 0; n = split($0, lines, "\n")
            for (i = 1; i <= n; i++) {
                m = split(lines[i], field, /[ \t]+/)
                if (field[1] == "URIs:") uri = field[2]
                if (field[1] == "Suites:") for (j = 2; j <= m; j++) if (field[j] == want) found = 1
            }
            if (found && uri != "") { print uri; exit }
        }' "${stanzas[@]}" 2>/dev/null)
    fi
    if [ -z "$uri" ]; then
        uri=$(awk -v want="$1" '$1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == want) { print $i; exit }
        }' "${lines[@]}" 2>/dev/null || true)
    fi
    printf '%s' "$uri"
}

url_pattern='^[a-z][a-z0-9+.-]*:[^[:space:]]+$'
mirror="${STOCKADE_DEBIAN_MIRROR:-$(host_mirror)}"
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources; set STOCKADE_DEBIAN_MIRROR" >&2; exit 1; }
[[ "$mirror" =~ $url_pattern ]] || { echo "not a mirror URL: $mirror" >&2; exit 2; }

# The suites that carry the fixes published since the suite's last point release.
updates=()
case "$suite" in
    sid|unstable|experimental|rc-buggy) ;;  # no updates or security suites
    *)
        updates+=("deb $mirror $suite-updates main")
        security="${STOCKADE_DEBIAN_SECURITY_MIRROR:-$(host_source_of "$suite-security")}"
        security="${security:-http://deb.debian.org/debian-security}"
        if [ "$security" != none ]; then
            [[ "$security" =~ $url_pattern ]] || { echo "not a mirror URL: $security (STOCKADE_DEBIAN_SECURITY_MIRROR)" >&2; exit 2; }
            updates+=("deb $security $suite-security main")
        fi
        ;;
esac

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

root="$work/rootfs"
echo "debootstrap $suite (minbase + $packages)" >&2
# --force-check-gpg: without the suite's keyring, debootstrap would warn (into the log
# nobody reads) and install whatever the mirror, often plain http, served.
# --keep-debootstrap-dir: its list of the packages it used tells which cached ones are
# superseded (below).
debootstrap --variant=minbase --force-check-gpg --keep-debootstrap-dir "${cache[@]}" \
    --include="$packages" "$suite" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# The cache keeps every version ever downloaded, and debootstrap only ever takes the one
# the mirror's index names now: each package's other versions will not be used again
# (a base refreshed every month would otherwise add its changed packages each time).
if [ -n "$cache_dir" ] && [ -r "$root/debootstrap/deburis" ]; then
    while read -r package version _; do
        current="${package}_${version/:/%3a}_"  # debootstrap's name for it (an epoch's colon escaped)
        for file in "$cache_dir/${package}_"*.deb; do
            [ -e "$file" ] || continue
            case "${file##*/}" in "$current"*) ;; *) rm -f -- "$file" ;; esac
        done
    done <"$root/debootstrap/deburis"
fi
rm -rf "$root/debootstrap"

if [ "${#updates[@]}" -gt 0 ]; then
    suites="$(printf '%s\n' "${updates[@]}" | awk '{print $3}' | paste -sd, | sed 's/,/, /g')"
    echo "applying Debian's updates since the point release ($suites)" >&2
    # The signatures are checked against the keyring debootstrap installed (apt refuses an
    # unsigned or wrongly signed suite); apt only warns when a suite cannot be fetched,
    # so its output is read: a base without its security updates is a failed build.
    printf '%s\n' "${updates[@]}" >"$root/etc/apt/sources.list.d/stockade-updates.list"
    mkdir -p "$root/proc"
    mount -t proc proc "$root/proc"
    in_root=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
             DEBIAN_FRONTEND=noninteractive)
    if ! "${in_root[@]}" apt-get -q update >"$work/update.log" 2>&1 ||
        grep -qE '^(Err:|E:)|Failed to fetch|index files failed' "$work/update.log"; then
        tail -n 30 "$work/update.log" >&2
        exit 1
    fi
    "${in_root[@]}" apt-get -q -y --with-new-pkgs -o Dpkg::Options::=--force-confold upgrade \
        >"$work/upgrade.log" 2>&1 || { tail -n 30 "$work/upgrade.log" >&2; exit 1; }
    umount "$root/proc"
    summary="$(grep -E '^[0-9]+ upgraded, ' "$work/upgrade.log" || true)"
    echo "updates applied: ${summary:-nothing to upgrade}" >&2
fi

# Nothing in a sandbox installs packages: drop the caches and documentation.
rm -rf "$work/rootfs/var/cache/apt/"* "$work/rootfs/var/lib/apt/lists/"* \
       "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"* \
       "$work/rootfs/usr/share/locale/"* "$work/rootfs/var/log/"*
tar --numeric-owner -C "$work/rootfs" -cf "$out" .
