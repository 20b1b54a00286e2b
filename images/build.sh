#!/usr/bin/env bash
# Builds a managed container image from images/<name>/ without any container registry:
#   1. debootstrap a Debian rootfs from the machine's own apt mirror (packages listed in <name>/packages),
#   2. prepare it on this machine (<name>/prepare-rootfs.sh: updates, trimming),
#   3. `docker import` it as cloud-cli-proxy/<name>-base:<base hash>,
#   4. `docker build` <name>/Dockerfile on top, which only COPYs <name>/rootfs/ and sets metadata.
# The tag is a content hash of images/<name>/, so editing any file there produces a new tag; the base
# image is keyed on the package list and prepare-rootfs.sh alone, so editing rootfs/ files only redoes step 4.
# An image whose directory has a file `base` naming another directory (e.g. `server`) takes its
# packages and prepare-rootfs.sh from there instead, so several images share one base
# (cloud-cli-proxy/server-base:<hash>); its tag then covers that base hash too. A file `binaries`
# lists workspace binaries copied from CCP_BIN_DIR into /usr/local/bin/; their contents are in the tag.
# The image reference is the last line on stdout; progress goes to stderr.

set -euo pipefail

usage() {
    cat <<'EOF'
Usage: images/build.sh [NAME] [--force]

Builds cloud-cli-proxy/NAME:<content hash> (and :latest) from images/NAME/. NAME defaults to "host".
Images of the compose deployment: runtime (needs the binaries, see CCP_BIN_DIR), postgres, haproxy.
  --force   rebuild even if the image exists, including the debootstrap base

Environment:
  DEBIAN_MIRROR           mirror for bookworm main (default: the first one in this machine's apt sources)
  DEBIAN_UPDATES_MIRROR   mirror for bookworm-updates (default: from apt sources; "none" skips it)
  DEBIAN_SECURITY_MIRROR  mirror for bookworm-security (default: from apt sources; "none" skips it)
  DOCKER_TIMEOUT          seconds allowed for each docker import/build (default 900)
  TMPDIR                  where the scratch directory goes (default /tmp)
  CCP_BIN_DIR             where an image's `binaries` are taken from
                          (default: ${CARGO_TARGET_DIR:-<repository>/target}/release)
EOF
}

readonly SUITE=bookworm
name=host
force=0
while (($#)); do
    case $1 in
    --force) force=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        printf 'build.sh: unknown option %s\n' "$1" >&2
        usage >&2
        exit 2
        ;;
    *) name=$1 ;;
    esac
    shift
done

images=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
src=$images/$name
# The directory the debootstrap base comes from: the image's own, or the one its `base` file names.
base_name=$name
if [[ -f $src/base ]]; then
    base_name=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$src/base" | head -n 1)
fi
base_src=$images/$base_name
if [[ ! $name =~ ^[a-z0-9][a-z0-9-]*$ || ! $base_name =~ ^[a-z0-9][a-z0-9-]*$ ||
    ! -f $base_src/packages || ! -f $src/Dockerfile ]]; then
    printf 'build.sh: no image "%s" (need %s/Dockerfile and %s/packages)\n' "$name" "$src" "$base_src" >&2
    exit 2
fi
docker_timeout=${DOCKER_TIMEOUT:-900}
repo=cloud-cli-proxy/$name
base_repo=cloud-cli-proxy/$base_name-base
started=$SECONDS

say() { printf '%s\n' "$*" >&2; }
stage() { printf '[%s/4] %s (%ds elapsed)\n' "$1" "$2" "$((SECONDS - started))" >&2; }
die() {
    say "build.sh: $*"
    exit 1
}
# Every docker call is time-boxed: a wedged daemon must fail the build, not hang it.
dock() {
    local limit=$1
    shift
    timeout --kill-after=10 "$limit" docker "$@"
}
image_exists() { dock 30 image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }

# Content hash of the given files (paths relative to DIR): names, executable bits and contents.
content_hash_in() {
    local dir=$1 file mode
    shift
    for file in "$@"; do
        mode=-
        [[ -x $dir/$file ]] && mode=x
        printf '%s %s %s\n' "$mode" "$(sha256sum <"$dir/$file" | cut -d' ' -f1)" "$file"
    done | sha256sum | cut -c1-12
}
all_files() { (cd -- "$src" && find . -type f ! -name '*.swp' ! -name '*~' | sed 's|^\./||' | LC_ALL=C sort); }

# First URI serving "$1 main" in the machine's apt sources: one-line .list files, then deb822 .sources.
apt_source_uri() {
    local suite=$1 file uri
    local -a lists=() deb822=()
    shopt -s nullglob
    [[ -f /etc/apt/sources.list ]] && lists+=(/etc/apt/sources.list)
    lists+=(/etc/apt/sources.list.d/*.list)
    deb822=(/etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    for file in "${lists[@]}"; do
        uri=$(awk -v suite="$suite" '
            { sub(/#.*/, "") }
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) != suite) next
                for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit }
            }' "$file")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            return
        fi
    done
    for file in "${deb822[@]}"; do
        uri=$(awk -v suite="$suite" '
            function has(list, word,   n, a, k) {
                n = split(list, a, /[ \t]+/)
                for (k = 1; k <= n; k++) if (a[k] == word) return 1
                return 0
            }
            BEGIN { RS = ""; FS = "\n" }
            {
                delete f
                for (l = 1; l <= NF; l++) {
                    if ($l ~ /^[ \t]*#/ || $l !~ /:/) continue
                    key = tolower(substr($l, 1, index($l, ":") - 1))
                    val = substr($l, index($l, ":") + 1)
                    gsub(/^[ \t]+|[ \t]+$/, "", val)
                    f[key] = val
                }
                if (tolower(f["enabled"]) == "no") next
                if (has(f["types"], "deb") && has(f["suites"], suite) && has(f["components"], "main")) {
                    split(f["uris"], u, /[ \t]+/); print u[1]; exit
                }
            }' "$file")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            return
        fi
    done
}

command -v docker >/dev/null || die "docker is not installed"
mapfile -t files < <(all_files)
version=$(content_hash_in "$src" "${files[@]}")
base_files=(packages)
[[ -f $base_src/prepare-rootfs.sh ]] && base_files+=(prepare-rootfs.sh)
base_hash=$(content_hash_in "$base_src" "${base_files[@]}")

# Workspace binaries named in `binaries`, built by cargo on this machine.
binaries=()
if [[ -f $src/binaries ]]; then
    mapfile -t binaries < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$src/binaries")
    bin_dir=${CCP_BIN_DIR:-${CARGO_TARGET_DIR:-$(dirname -- "$images")/target}/release}
    for binary in "${binaries[@]}"; do
        [[ -x $bin_dir/$binary ]] ||
            die "no $bin_dir/$binary: build it first (cargo build --release --workspace --bins) or set CCP_BIN_DIR"
    done
fi
# A shared base and the binaries are part of what the image is; the host image's tag stays the hash
# of its own directory alone.
if [[ $base_name != "$name" || ${#binaries[@]} -gt 0 ]]; then
    version=$({
        printf 'files %s\nbase %s %s\n' "$version" "$base_name" "$base_hash"
        ((${#binaries[@]} == 0)) || printf 'binaries %s\n' "$(content_hash_in "$bin_dir" "${binaries[@]}")"
    } | sha256sum | cut -c1-12)
fi
ref=$repo:$version
base_ref=$base_repo:$base_hash

if ((!force)) && image_exists "$ref"; then
    say "$ref is up to date ($((SECONDS - started))s)"
    printf '%s\n' "$ref"
    exit 0
fi

# One build of an image at a time; a build that waited may find the image already there.
exec 9>"${TMPDIR:-/tmp}/cloud-cli-proxy-build-$name.lock"
if ! flock -n 9; then
    say "waiting for another build of $name to finish"
    flock -w 3600 9 || die "gave up waiting for the other build"
    if ((!force)) && image_exists "$ref"; then
        say "$ref is up to date ($((SECONDS - started))s)"
        printf '%s\n' "$ref"
        exit 0
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cloud-cli-proxy-build-$name.XXXXXX")
background=
cleanup() {
    if [[ -n $background ]]; then
        kill "$background" 2>/dev/null || true
        wait "$background" 2>/dev/null || true
    fi
    # debootstrap mounts proc and sys inside the rootfs; never let rm walk into them.
    local mount
    awk -v dir="$work/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r mount; do
        umount -l "$mount" || true
    done
    rm -rf --one-file-system -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a long command with its output in a log file, printing a heartbeat; shows the log's tail on failure.
run_logged() {
    local what=$1 log=$2 status=0 next=$((SECONDS + 30))
    shift 2
    "$@" >"$log" 2>&1 &
    background=$!
    while kill -0 "$background" 2>/dev/null; do
        sleep 1
        if ((SECONDS >= next)); then
            next=$((SECONDS + 30))
            say "      … $what still running ($((SECONDS - started))s): $(tail -n 1 "$log" | cut -c1-100)"
        fi
    done
    wait "$background" || status=$?
    background=
    if ((status != 0)); then
        say "build.sh: $what failed (exit $status); last lines of $log:"
        tail -n 25 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
}

# Images sharing a base build it once: the second waits for the first, then finds it there.
if [[ $base_name != "$name" ]]; then
    exec 8>"${TMPDIR:-/tmp}/cloud-cli-proxy-build-$base_name-base.lock"
    if ! flock -n 8; then
        say "waiting for another build of $base_ref to finish"
        flock -w 3600 8 || die "gave up waiting for the other build"
    fi
fi

if ((!force)) && image_exists "$base_ref"; then
    stage 1 "debootstrap: skipped, $base_ref exists"
    stage 2 "prepare rootfs: skipped"
    stage 3 "docker import: skipped"
else
    ((EUID == 0)) || die "debootstrap needs root (run as root, or build the base image elsewhere)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
    mirror=${DEBIAN_MIRROR:-$(apt_source_uri "$SUITE")}
    [[ -n $mirror ]] || die "no 'deb … $SUITE main' entry in /etc/apt/sources.list*; set DEBIAN_MIRROR"
    updates=${DEBIAN_UPDATES_MIRROR:-$(apt_source_uri "$SUITE-updates")}
    security=${DEBIAN_SECURITY_MIRROR:-$(apt_source_uri "$SUITE-security")}
    packages=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$base_src/packages" | paste -sd, -)
    rootfs=$work/rootfs

    stage 1 "debootstrap $SUITE from $mirror (this takes a few minutes; log: $work/debootstrap.log)"
    run_logged debootstrap "$work/debootstrap.log" \
        timeout --kill-after=30 3600 debootstrap --variant=minbase --components=main \
        --include="$packages" "$SUITE" "$rootfs" "$mirror"

    stage 2 "prepare rootfs (updates: ${updates:-none}, security: ${security:-none})"
    if [[ -f $base_src/prepare-rootfs.sh ]]; then
        run_logged prepare-rootfs "$work/prepare.log" \
            env SUITE="$SUITE" MIRROR="$mirror" UPDATES_MIRROR="${updates#none}" \
            SECURITY_MIRROR="${security#none}" timeout --kill-after=30 1800 bash "$base_src/prepare-rootfs.sh" "$rootfs"
    fi
    say "      rootfs: $(du -sh --one-file-system "$rootfs" | cut -f1)"

    stage 3 "docker import $base_ref"
    # No xattrs: file capabilities (e.g. on ping) would make those binaries fail under --cap-drop ALL.
    tar --numeric-owner --one-file-system -C "$rootfs" -c . |
        dock "$docker_timeout" import \
            --change "LABEL io.cloud-cli-proxy.managed=true" \
            --change "LABEL io.cloud-cli-proxy.image=$base_name-base" \
            --change "LABEL io.cloud-cli-proxy.version=$base_hash" \
            --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --message "debootstrap $SUITE minbase + images/$base_name/packages" \
            - "$base_ref" >/dev/null
fi

stage 4 "docker build $ref"
context=$work/context
mkdir -p "$context"
cp -a "$src/Dockerfile" "$context/"
if [[ -d $src/rootfs ]]; then
    cp -a "$src/rootfs" "$context/"
else
    mkdir "$context/rootfs"
fi
if ((${#binaries[@]})); then
    mkdir -p "$context/rootfs/usr/local/bin"
    for binary in "${binaries[@]}"; do
        cp -- "$bin_dir/$binary" "$context/rootfs/usr/local/bin/$binary"
    done
fi
# Modes come from the checkout; make them independent of the builder's umask.
chmod -R u+rwX,go+rX,go-w "$context"
# The Dockerfile labels the image (io.cloud-cli-proxy.managed, .image, .version from VERSION).
dock "$docker_timeout" build --quiet \
    --build-arg "BASE_IMAGE=$base_ref" --build-arg "VERSION=$version" \
    -t "$ref" -t "$repo:latest" "$context" >"$work/build.log" 2>&1 || {
    say "build.sh: docker build failed; output:"
    sed 's/^/    /' "$work/build.log" >&2
    exit 1
}
say "      built $ref ($(dock 30 image inspect --format '{{.Size}}' "$ref" | awk '{ printf "%d MB", $1 / 1e6 }')) in $((SECONDS - started))s"
printf '%s\n' "$ref"
