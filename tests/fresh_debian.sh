#!/usr/bin/env bash
# The README's main-job command, copied from the README, on a stock Debian 12 (bookworm, minbase
# variant, with only python3 and ca-certificates added): it must exit 0 and the demo must report
# every file arrived.
#
#   bash tests/fresh_debian.sh                 # the main-job command
#   bash tests/fresh_debian.sh --as-user       # the main-job command as a user with sudo (sudo
#                                              # is installed and the user made first), then as root
#   bash tests/fresh_debian.sh --test-command  # ... then the README's test command (at most
#                                              # $TROLLMOVES_FRESH_TEST_TIMEOUT s, default 600)
#
# Needs root and debootstrap (installed with apt-get when missing). The root is made in
# $TROLLMOVES_FRESH_ROOT (default /var/tmp/trollmoves-fresh-debian, removed first) with
# `debootstrap --variant=minbase --include=python3,ca-certificates bookworm ROOT MIRROR`, MIRROR
# being the first URIs of /etc/apt/sources.list.d/debian.sources (or $DEBIAN_MIRROR). A tar of that
# pristine root is kept in $TROLLMOVES_FRESH_CACHE (default /var/cache/trollmoves-fresh-debian) and
# unpacked on later runs instead of debootstrapping again (TROLLMOVES_FRESH_NO_CACHE=1: don't).
# The project goes in as the checkout's tracked and untracked, not ignored files (git ls-files),
# to /root/trollmoves; this machine's CA bundle replaces the root's (the network here goes through
# a TLS proxy). The command runs as root with a clean environment: `env -i ... chroot ROOT bash -c
# 'cd /root/trollmoves && COMMAND'`. /proc is mounted for the run and always unmounted after.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
root="$(realpath -m "${TROLLMOVES_FRESH_ROOT:-/var/tmp/trollmoves-fresh-debian}")"
cache=${TROLLMOVES_FRESH_CACHE:-/var/cache/trollmoves-fresh-debian}
test_timeout=${TROLLMOVES_FRESH_TEST_TIMEOUT:-600}
run_tests=""
as_user=""
user_failed=""
for arg in "$@"; do
    case "$arg" in
        --test-command) run_tests=1 ;;
        --as-user) as_user=1 ;;
        *) echo "usage: bash tests/fresh_debian.sh [--as-user] [--test-command]" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "fresh_debian.sh: needs root (debootstrap, chroot, mount)" >&2
    exit 2
fi
case "$root" in
    /|/usr|/usr/*|/etc|/etc/*|/var|/root|/home|"") echo "fresh_debian.sh: refusing root '$root'" >&2; exit 2 ;;
esac

mirror=${DEBIAN_MIRROR:-$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

# The README's commands: the first line of the ```sh block after "**Run the main job**" (and
# after "**Run the whole test suite**").
readme_command() {
    awk -v title="$1" 'index($0, title) {found = 1} found && /^```sh/ {getline; print; exit}' "$repo/README.md"
}
main_command="$(readme_command '**Run the main job**')"
test_command="$(readme_command '**Run the whole test suite**')"
if [ -z "$main_command" ] || [ -z "$test_command" ]; then
    echo "fresh_debian.sh: README.md has no '**Run the main job**' / '**Run the whole test suite**' sh block" >&2
    exit 2
fi

# Processes left in the root (daemons of an interrupted test run), by PID, then every mount under it.
release_root() {
    local pid mnt
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && kill -9 "$pid" 2>/dev/null || true
    done
    for mnt in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    done
}
remove_root() {
    release_root
    if awk -v r="$root" '$2 == r || index($2, r "/") == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
        echo "fresh_debian.sh: something is still mounted under $root; not removing it" >&2
        exit 1
    fi
    rm -rf "$root"
}
trap release_root EXIT

started=$(date +%s)
remove_root
mkdir -p "$root"
tarball="$cache/bookworm-minbase-python3.tar"
if [ -f "$tarball" ] && [ -z "${TROLLMOVES_FRESH_NO_CACHE:-}" ]; then
    echo "== unpacking the pristine Debian 12 root from $tarball"
    tar -C "$root" -xf "$tarball"
else
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "== installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    echo "== debootstrap --variant=minbase --include=python3,ca-certificates bookworm $root $mirror"
    debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$root" "$mirror" \
        > "$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; exit 1; }
    release_root
    mkdir -p "$cache"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
echo "   root ready after $(( $(date +%s) - started )) s"

cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$root/root/trollmoves"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard \
        | tar -C "$repo" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$root/root/trollmoves" -xf -
else
    tar -C "$repo" --exclude=.git --exclude='*.egg-info' --exclude=build --exclude=dist -cf - . \
        | tar -C "$root/root/trollmoves" -xf -
fi
mount -t proc proc "$root/proc"

# in_root USER COMMAND: run COMMAND in the checkout of USER's home, with a clean environment.
in_root() {
    local user=$1 home=/root
    [ "$user" != root ] && home="/home/$user"
    env -i HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        chroot --userspec="$user:$user" "$root" bash -c "cd $home/trollmoves && $2"
}

if [ -n "$as_user" ]; then
    echo "== as a user with sudo (user alice, sudo installed first): $main_command"
    in_root root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sudo >/dev/null \
        && useradd -m -s /bin/bash alice && echo 'alice ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/alice \
        && cp -a /root/trollmoves /home/alice/trollmoves && chown -R alice:alice /home/alice/trollmoves"
    user_started=$(date +%s)
    if in_root alice "$main_command" > "$root.user.log" 2>&1; then
        grep -E '^== |speedups:|files arrived' "$root.user.log" || true
        echo "fresh_debian.sh: OK as alice in $(( $(date +%s) - user_started )) s"
    else
        tail -30 "$root.user.log"
        echo "fresh_debian.sh: FAILED as alice (log: $root.user.log); going on as root" >&2
        user_failed=1
    fi
fi

echo "== in the fresh root: $main_command"
log="$root.main.log"
job_started=$(date +%s)
status=0
in_root root "$main_command" 2>&1 | tee "$log" || status=$?
elapsed=$(( $(date +%s) - job_started ))
if [ "$status" != 0 ]; then
    echo "fresh_debian.sh: FAILED: the main-job command exited $status after $elapsed s (log: $log)" >&2
    exit 1
fi
summary="$(grep -E '^- [0-9]+/[0-9]+ files arrived' "$log" | tail -1 || true)"
count="$(sed -E 's/^- ([0-9]+)\/([0-9]+) .*/\1 \2/' <<<"$summary")"
if [ -z "$summary" ] || [ "${count% *}" != "${count#* }" ]; then
    echo "fresh_debian.sh: FAILED: the demo did not report every file arrived: '$summary'" >&2
    exit 1
fi
speedups="$(grep -oE 'speedups: [a-z]+' "$log" | head -1 || true)"
echo "fresh_debian.sh: OK: main-job command in $elapsed s ($speedups; $summary); total $(( $(date +%s) - started )) s"

# Again: a re-run must be quick and still succeed.
rerun_started=$(date +%s)
in_root root "$main_command" > "$root.rerun.log" 2>&1 || { tail -20 "$root.rerun.log"; echo "fresh_debian.sh: FAILED: re-run" >&2; exit 1; }
echo "fresh_debian.sh: OK: re-run in $(( $(date +%s) - rerun_started )) s"

if [ -n "$run_tests" ]; then
    # No services started by package scripts inside the root (its processes are ours to stop).
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    echo "== in the fresh root, at most $test_timeout s: $test_command"
    tests_started=$(date +%s)
    status=0
    in_root root "timeout --kill-after=15 $test_timeout $test_command" > "$root.tests.log" 2>&1 || status=$?
    echo "fresh_debian.sh: test command exited $status after $(( $(date +%s) - tests_started )) s" \
         "(124: timed out); last lines of $root.tests.log:"
    grep -E '^== ' "$root.tests.log" || true
    tail -15 "$root.tests.log"
fi
[ -z "$user_failed" ]
