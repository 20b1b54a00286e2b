#!/usr/bin/env bash
# Turns a fresh debootstrap of images/server/packages into the base rootfs shared by the runtime,
# postgres and haproxy images, on the build machine (their Dockerfiles have no RUN): pending
# bookworm-updates/security upgrades, the service accounts' directories, no per-machine identity,
# no default PostgreSQL cluster, and no apt lists, docs or man pages.
# Called by images/build.sh as: SUITE=… MIRROR=… [UPDATES_MIRROR=…] [SECURITY_MIRROR=…] prepare-rootfs.sh ROOTFS

set -euo pipefail

rootfs=${1:?usage: prepare-rootfs.sh ROOTFS}
: "${SUITE:?}" "${MIRROR:?}"
UPDATES_MIRROR=${UPDATES_MIRROR:-}
SECURITY_MIRROR=${SECURITY_MIRROR:-}
[[ -x $rootfs/usr/bin/apt-get ]] || {
    echo "prepare-rootfs.sh: $rootfs is not a debootstrap rootfs" >&2
    exit 1
}

in_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

# Maintainer scripts must not start daemons on the build machine.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
mount -t proc proc "$rootfs/proc"
cleanup() {
    umount "$rootfs/proc" 2>/dev/null || umount -l "$rootfs/proc" 2>/dev/null || true
    rm -f "$rootfs/usr/sbin/policy-rc.d"
}
trap cleanup EXIT

echo "== apt sources"
{
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE"
    [[ -z $UPDATES_MIRROR ]] || printf 'deb %s %s-updates main\n' "$UPDATES_MIRROR" "$SUITE"
    [[ -z $SECURITY_MIRROR ]] || printf 'deb %s %s-security main\n' "$SECURITY_MIRROR" "$SUITE"
} | tee "$rootfs/etc/apt/sources.list"

echo "== upgrade from ${SUITE}-updates and ${SUITE}-security"
in_root apt-get -q update
in_root apt-get -q -y -o Dpkg::Options::=--force-confold --no-install-recommends upgrade

# The package's post-install script made a cluster under /var/lib/postgresql/15/main with the build
# machine's settings; the postgres image initialises its own, in its volume, at first start.
echo "== PostgreSQL: no default cluster"
in_root sh -c 'pg_dropcluster 15 main 2>/dev/null || true'
rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15"
test -x "$rootfs/usr/lib/postgresql/15/bin/postgres"
# Where the volumes are mounted: a new named volume takes the ownership of the directory it hides.
install -d -m 0700 -o "$(in_root id -u postgres)" -g "$(in_root id -g postgres)" "$rootfs/var/lib/postgresql/data"
install -d -m 0755 -o "$(in_root id -u postgres)" -g "$(in_root id -g postgres)" "$rootfs/var/run/postgresql"

echo "== per-machine identity"
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
rm -f "$rootfs"/etc/ssl/private/ssl-cert-snakeoil.key "$rootfs"/etc/ssl/certs/ssl-cert-snakeoil.pem

echo "== trim"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
echo "== done: $(du -sh --one-file-system "$rootfs" | cut -f1)"
