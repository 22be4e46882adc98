#!/usr/bin/env bash
# Proves examples/Dockerfile's runtime image without a Docker engine.
#
#   scripts/image-check.sh            (as root: debootstrap, chroot, mount)
#   scripts/image-check.sh --rootfs   only build (or reuse) the root filesystem
#
# 1. Reads the Dockerfile: the runtime stage's Debian release (`FROM
#    debian:<release>-slim`), its RUN commands (apt-get install ..., useradd
#    ...) and the build stage's `ARG SERVICE=` default.
# 2. Builds that stage's root filesystem: `debootstrap --variant=minbase
#    <release>` from Debian's mirror (DEBIAN_MIRROR, default
#    http://deb.debian.org/debian), then runs the stage's RUN commands,
#    verbatim, in a chroot. Cached under $SLINGSHOT_IMAGE_CACHE (default
#    /var/tmp/slingshot-image), keyed by the release and the RUN text, so a
#    changed Dockerfile builds a new one. The first build takes a few
#    minutes (mostly downloading); later runs reuse it.
# 3. Builds the service (`cargo build --locked -p slingshot-examples --bin
#    $SERVICE`; this machine is the same Debian release, so the same glibc)
#    and copies it where COPY puts it. SLINGSHOT_IMAGE_PROFILE picks the
#    profile: `release` as the Dockerfile's build stage, or `dev` (the
#    default here), which scripts/test.sh has already built: the same crates
#    and features linked the same way, so the same shared libraries, without
#    a release build of the whole dependency tree in every CI run.
# 4. Checks with `ldd` inside the root filesystem that every shared library
#    the binary needs is there and belongs to libc6 or libgcc-s1 (both in
#    debian:<release>-slim): no libpq, libsqlite3 or libssl.
# 5. Runs tests/tests/image.rs: the binary in the chroot as the Dockerfile's
#    USER, with its ENV, ENTRYPOINT and CMD, against the real RabbitMQ, S3
#    and PostgreSQL: it starts, consumes and routes a request, answers
#    /healthz and /readyz, and exits 0 on SIGTERM.
#
# Needs the services' environment (scripts/services.sh writes it); sources
# it when SLINGSHOT_TEST_AMQP_URL is unset.
set -euo pipefail
exec </dev/null

rootfs_only=
for arg in "$@"; do
    case "$arg" in
        --rootfs) rootfs_only=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "usage: $0 [--rootfs]" >&2
            exit 2
            ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin:/usr/sbin:/sbin"
dockerfile=examples/Dockerfile
fail() {
    echo "image-check: FAILED: $*" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot, mount)"
if ! command -v debootstrap >/dev/null; then
    echo "==> apt-get install debootstrap" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
        fail "debootstrap is not installed and apt-get could not install it"
fi
profile=${SLINGSHOT_IMAGE_PROFILE:-dev}
case "$profile" in
    dev) profile_dir=debug ;;
    release) profile_dir=release ;;
    *) fail "SLINGSHOT_IMAGE_PROFILE=$profile: expected dev or release" ;;
esac

# --- 1. The Dockerfile -------------------------------------------------------
# Logical lines (continuations joined), comments dropped.
logical=$(sed -e '/^[[:space:]]*#/d' "$dockerfile" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
runtime_from=$(printf '%s\n' "$logical" | awk '$1 == "FROM" { from = $2 } END { print from }')
case "$runtime_from" in
    debian:*-slim) release=${runtime_from#debian:} release=${release%-slim} ;;
    *) fail "$dockerfile: the runtime stage is FROM $runtime_from, expected debian:<release>-slim" ;;
esac
# The runtime stage: everything after the last FROM.
stage=$(printf '%s\n' "$logical" | awk '$1 == "FROM" { n++ } { line[NR] = $0; stage[NR] = n } END { for (i = 1; i <= NR; i++) if (stage[i] == n) print line[i] }')
runs=$(printf '%s\n' "$stage" | sed -n 's/^RUN[[:space:]]\{1,\}//p')
[ -n "$runs" ] || fail "$dockerfile: the runtime stage has no RUN"
service=$(printf '%s\n' "$logical" | sed -n 's/^ARG[[:space:]]\{1,\}SERVICE=\([A-Za-z0-9_-]*\).*/\1/p' | head -n 1)
[ -n "$service" ] || fail "$dockerfile: no ARG SERVICE=<default>"
echo "==> $dockerfile: runtime FROM $runtime_from (Debian $release), service $service"

# --- 2. The root filesystem --------------------------------------------------
cache=${SLINGSHOT_IMAGE_CACHE:-/var/tmp/slingshot-image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(printf '%s\n%s\n' "$release" "$runs" | sha256sum | cut -c1-12)
root="$cache/rootfs-$release-$key"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
# Mounts /proc and /dev in `$1` as a container runtime would provide them.
mount_system() {
    mount -t proc proc "$1/proc" && mounted+=("$1/proc")
    mount --bind /dev "$1/dev" && mounted+=("$1/dev")
}

if [ -f "$root/.slingshot-image-ready" ]; then
    echo "==> root filesystem: $root (cached)"
else
    mkdir -p "$cache"
    building="$root.building"
    rm -rf "$building"
    started=$(date +%s)
    echo "==> debootstrap --variant=minbase $release $building $mirror"
    debootstrap --variant=minbase "$release" "$building" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $cache/debootstrap.log"
    cp /etc/resolv.conf "$building/etc/resolv.conf"
    mount_system "$building"
    while IFS= read -r run; do
        echo "==> chroot: RUN $run"
        chroot "$building" /bin/sh -c "$run" || fail "RUN $run"
    done <<<"$runs"
    cleanup
    mounted=()
    touch "$building/.slingshot-image-ready"
    mv "$building" "$root"
    echo "==> root filesystem built in $(($(date +%s) - started)) s: $root"
fi
if [ -n "$rootfs_only" ]; then
    exit 0
fi

# --- 3. The service binary, where COPY puts it ---------------------------------
dest=$(printf '%s\n' "$stage" | awk '$1 == "COPY" && $2 ~ /^--from=/ { print $NF }' | tail -n 1)
case "$dest" in
    /*) ;;
    *) fail "$dockerfile: the runtime stage has no COPY --from=... <absolute path>" ;;
esac
echo "==> cargo build --profile $profile --locked -p slingshot-examples --bin $service"
started=$(date +%s)
cargo build --profile "$profile" --locked -p slingshot-examples --bin "$service"
echo "==> built in $(($(date +%s) - started)) s; installed as $dest"
install -D -m 0755 "target/$profile_dir/$service" "$root$dest"

# --- 4. Shared libraries -----------------------------------------------------
echo "==> ldd $dest (in the image)"
libs=$(chroot "$root" /usr/bin/ldd "$dest") || fail "ldd $dest: $libs"
if grep -q 'not found' <<<"$libs"; then
    fail "libraries missing from the image:
$libs"
fi
allowed=" libc6 libgcc-s1 "
while IFS= read -r line; do
    path=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; exit } }' <<<"$line")
    [ -n "$path" ] || continue # linux-vdso.so.1: the kernel's
    package=$(chroot "$root" dpkg -S "$path" 2>/dev/null ||
        chroot "$root" dpkg -S "*/$(basename "$path")" 2>/dev/null || true)
    package=${package%%:*}
    echo "    $path ($package)"
    case "$allowed" in
        *" $package "*) ;;
        *) fail "$dest needs $path from ${package:-no package}; the image promises libc only" ;;
    esac
done <<<"$libs"

# --- 5. Run it ---------------------------------------------------------------
if [ -z "${SLINGSHOT_TEST_AMQP_URL:-}" ]; then
    # shellcheck source=/dev/null
    . "${SLINGSHOT_SERVICES_DIR:-/var/tmp/slingshot-services}/env"
fi
# What a container runtime provides: /proc and /dev.
mount_system "$root"
echo "==> cargo test -p slingshot-tests --features services --test image (the image in a chroot on the real services)"
SLINGSHOT_IMAGE_ROOT="$root" cargo test -p slingshot-tests --features services --test image -- --nocapture
echo "==> image check passed"
