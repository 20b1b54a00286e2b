#!/usr/bin/env bash
# Turns a fresh debootstrap of images/host/packages into the host base rootfs, on the build machine
# (the Dockerfile has no RUN): pending bookworm-updates/security upgrades, noVNC's web client, the
# container-specific PAM tweak, no per-machine identity, and no apt lists, docs or man pages.
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

# noVNC is a self-contained set of static files, but Debian's package depends on nodejs (~240 MB,
# for its developer utilities) and python3-oslo.config. Unpack just the web client; dpkg does not
# track these files, so a later `apt-get install novnc` simply takes them over.
echo "== noVNC web client"
in_root sh -c 'cd /tmp && apt-get -q download novnc && dpkg-deb -x novnc_*.deb /tmp/novnc-unpacked'
rm -rf "$rootfs/usr/share/novnc"
mv "$rootfs/tmp/novnc-unpacked/usr/share/novnc" "$rootfs/usr/share/novnc"
rm -rf "$rootfs/usr/share/novnc/utils"
mkdir -p "$rootfs/usr/share/doc/novnc"
cp "$rootfs/tmp/novnc-unpacked/usr/share/doc/novnc/copyright" "$rootfs/usr/share/doc/novnc/"
rm -rf "$rootfs"/tmp/novnc*
test -f "$rootfs/usr/share/novnc/vnc.html"

# pam_loginuid needs CAP_AUDIT_CONTROL once a loginuid is set, which a tenant container does not get.
echo "== PAM: pam_loginuid optional for sshd"
sed -i -E 's/^(session[[:space:]]+)required([[:space:]]+pam_loginuid\.so)/\1optional\2/' "$rootfs/etc/pam.d/sshd"
grep -E '^session[[:space:]]+optional[[:space:]]+pam_loginuid' "$rootfs/etc/pam.d/sshd"

# Every container must get its own SSH host keys and machine id (host-init creates them at start),
# and nothing about the build machine may leak into the image.
echo "== per-machine identity"
rm -f "$rootfs"/etc/ssh/ssh_host_*
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"

echo "== trim"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
# Emptied, not removed: sshd and login expect lastlog, wtmp and btmp to exist.
find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
echo "== done: $(du -sh --one-file-system "$rootfs" | cut -f1)"
