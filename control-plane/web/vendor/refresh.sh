#!/usr/bin/env bash
# Recreates the vendored browser libraries in this directory (novnc/ and
# xterm/) from pinned Debian bookworm packages. See README.md here.
#
# Needs: apt-get, dpkg-deb, sha256sum, python3. Runs as any user while the
# apt lists know the pinned versions; refreshing the lists (apt-get update)
# needs root and only happens when a download fails for lack of them.
#
# The result depends only on the pinned packages, so running this twice
# leaves the tree byte-identical. To move to a new version: change the
# version and sha256 below, run this script, review the diff, commit.
set -euo pipefail

# noVNC: the ES-module client (core/ and the pako modules it imports).
NOVNC_VERSION='1:1.3.0-1'
NOVNC_SHA256='5ff8b8c93c1c6cc911e01bfa77d12d4098e1904f738a996040c8095e02492ebb'

# xterm.js: node-xterm has the CommonJS modules and xterm.css; libjs-xterm
# (same source package, same version) has the addons, fit among them.
XTERM_VERSION='3.8.1+~cs0.9.0-1+deb12u1'
NODE_XTERM_SHA256='c949c5031705e57dd10c7338f04d8ea595900e3420f2ecf3c7ea88f3982dc18a'
LIBJS_XTERM_SHA256='34c9e0736972f045612f34758d5856e4c0d6762c8740b2a019dac8b0781137c0'

# noVNC's copyright file refers to the MPL-2.0 text by path only; that text
# comes from base-files, which every Debian system has installed.
MPL_TEXT='/usr/share/common-licenses/MPL-2.0'
MPL_SHA256='fab3dd6bdab226f1c08630b1dd917e11fcb4ec5e1e020e2c16f83a0a13863e85'

export LC_ALL=C
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download writes as the unprivileged _apt user when run as root.
chmod 755 "$work"

fail() {
  echo "refresh.sh: $*" >&2
  exit 1
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# apt_offers PKG VERSION: whether a package list apt has (not just the
# status of an installed package) offers PKG at VERSION.
apt_offers() {
  apt-cache madison "$1" 2>/dev/null |
    awk -F'|' -v want="$2" '{ gsub(/ /, "", $2) } $2 == want { found = 1 } END { exit !found }'
}

# download PKG VERSION SHA256: fetches PKG=VERSION into its own directory,
# checks the pinned hash and prints the path of the .deb.
download() {
  local pkg="$1" version="$2" sha="$3"
  local dir="$work/deb/$pkg"
  mkdir -p "$dir"
  if [[ $EUID -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$dir"
  fi
  if ! (cd "$dir" && apt-get download -q "$pkg=$version") >&2; then
    if apt_offers "$pkg" "$version"; then
      fail "apt-get download $pkg=$version failed although an apt source offers it"
    fi
    echo "refresh.sh: no apt source offers $pkg=$version; running apt-get update" >&2
    apt-get update -q >&2
    (cd "$dir" && apt-get download -q "$pkg=$version") >&2 ||
      fail "apt-get download $pkg=$version failed (a version replaced by a point release is only on snapshot.debian.org)"
  fi
  local debs=("$dir"/*.deb)
  [[ ${#debs[@]} -eq 1 && -f ${debs[0]} ]] || fail "expected one .deb for $pkg in $dir"
  local actual
  actual="$(sha256_of "${debs[0]}")"
  [[ $actual == "$sha" ]] || fail "$pkg $version: sha256 is $actual, pinned $sha"
  printf '%s\n' "${debs[0]}"
}

# version_entry PKG VERSION SHA256: one block of a VERSION file.
version_entry() {
  printf 'package: %s\nversion: %s\nsha256: %s\n' "$1" "$2" "$3"
}

novnc_deb="$(download novnc "$NOVNC_VERSION" "$NOVNC_SHA256")"
node_xterm_deb="$(download node-xterm "$XTERM_VERSION" "$NODE_XTERM_SHA256")"
libjs_xterm_deb="$(download libjs-xterm "$XTERM_VERSION" "$LIBJS_XTERM_SHA256")"

# One root for all packages: node-xterm's lib/addons is a relative symlink
# into libjs-xterm's /usr/share/javascript/xterm/addons.
root="$work/root"
mkdir -p "$root"
for deb in "$novnc_deb" "$node_xterm_deb" "$libjs_xterm_deb"; do
  dpkg-deb -x "$deb" "$root"
done

out="$work/out"
mkdir -p "$out/novnc" "$out/xterm"

# --- noVNC ------------------------------------------------------------------
src="$root/usr/share/novnc"
[[ -f $src/core/rfb.js ]] || fail "novnc: core/rfb.js missing from the package"
(cd "$src" && find core -type f -name '*.js' && find vendor/pako -type f) | sort |
  while IFS= read -r file; do
    mkdir -p "$out/novnc/$(dirname "$file")"
    cp "$src/$file" "$out/novnc/$file"
  done
cp "$root/usr/share/doc/novnc/copyright" "$out/novnc/LICENSE"
[[ -f $MPL_TEXT ]] || fail "$MPL_TEXT missing (it comes with base-files)"
[[ "$(sha256_of "$MPL_TEXT")" == "$MPL_SHA256" ]] ||
  fail "$MPL_TEXT differs from the pinned text; review it and update MPL_SHA256"
cp "$MPL_TEXT" "$out/novnc/MPL-2.0"
version_entry novnc "$NOVNC_VERSION" "$NOVNC_SHA256" >"$out/novnc/VERSION"

# Every relative ES-module import must name a file that was copied, and no
# import may need anything but a relative path (browsers resolve no others).
python3 - "$out/novnc" <<'PY'
import os
import re
import sys

top = sys.argv[1]
# A static import/export ... from '...', or a bare import '...', starting a
# line (so that prose in comments does not count), and any dynamic import().
static = re.compile(
    r"""^[ \t]*(?:import|export)\b[^;'"]*?\bfrom\s*(['"])(.*?)\1"""
    r"""|^[ \t]*import\s*(['"])(.*?)\3""",
    re.M | re.S,
)
dynamic = re.compile(r"\bimport\s*\(")
errors = []
count = 0
for folder, _dirs, files in os.walk(top):
    for name in files:
        if not name.endswith(".js"):
            continue
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, top)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if dynamic.search(text):
            errors.append(f"{rel}: dynamic import()")
        for m in static.finditer(text):
            target = m.group(2) if m.group(2) is not None else m.group(4)
            count += 1
            if not target.startswith(("./", "../")):
                errors.append(f"{rel}: import of non-relative {target!r}")
                continue
            resolved = os.path.normpath(os.path.join(folder, target))
            if os.path.relpath(resolved, top).startswith("..") or not os.path.isfile(resolved):
                errors.append(f"{rel}: import {target!r} is not a vendored file")
if count == 0:
    errors.append("no imports found at all; the check is broken")
if errors:
    sys.exit("refresh.sh: novnc imports:\n  " + "\n  ".join(sorted(errors)))
print(f"refresh.sh: novnc: {count} imports, all resolve", file=sys.stderr)
PY

# --- xterm.js ---------------------------------------------------------------
pkgdir="$root/usr/share/nodejs/xterm"
read -r xterm_upstream xterm_main < <(python3 - "$pkgdir/package.json" <<'PY'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    package = json.load(f)
print(package["version"], package["main"])
PY
)
[[ $xterm_main == lib/* ]] || fail "xterm: package.json main ($xterm_main) is not under lib/"
entry="${xterm_main#lib/}"
[[ -f $pkgdir/lib/addons/fit/fit.js ]] || fail "xterm: lib/addons/fit/fit.js missing"

python3 "$here/bundle-commonjs.py" \
  --root "$pkgdir/lib" \
  --out "$out/xterm/xterm.js" \
  --expose "Terminal=$entry:Terminal" \
  --expose "XtermFit=addons/fit/fit.js" \
  --banner "xterm.js $xterm_upstream, licence MIT (Expat): see LICENSE next to this file." \
  --banner "Built from the Debian packages node-xterm and libjs-xterm $XTERM_VERSION" \
  --banner "by control-plane/web/vendor/refresh.sh. Do not edit by hand." \
  --banner "" \
  --banner "Defines window.Terminal (the xterm.js Terminal class) and window.XtermFit" \
  --banner "(the fit addon: Terminal.applyAddon(XtermFit), then term.fit())."
cp "$pkgdir/lib/xterm.css" "$out/xterm/xterm.css"
cp "$root/usr/share/doc/node-xterm/copyright" "$out/xterm/LICENSE"
cmp -s "$root/usr/share/doc/node-xterm/copyright" "$root/usr/share/doc/libjs-xterm/copyright" ||
  cp "$root/usr/share/doc/libjs-xterm/copyright" "$out/xterm/LICENSE.libjs-xterm"
{
  version_entry node-xterm "$XTERM_VERSION" "$NODE_XTERM_SHA256"
  echo
  version_entry libjs-xterm "$XTERM_VERSION" "$LIBJS_XTERM_SHA256"
} >"$out/xterm/VERSION"

# --- install ----------------------------------------------------------------
find "$out" -type d -exec chmod 755 {} +
find "$out" -type f -exec chmod 644 {} +
for lib in novnc xterm; do
  rm -rf "${here:?}/$lib"
  cp -R "$out/$lib" "$here/$lib"
done
echo "refresh.sh: wrote $here/novnc and $here/xterm" >&2
