#!/usr/bin/env bash
# Build and start the control plane on this machine, in the foreground (Ctrl-C stops it).
#
# Usage:  ./deploy/scripts/quickstart.sh [CONTROL-PLANE FLAGS...]
#   e.g.  ./deploy/scripts/quickstart.sh --listen 127.0.0.1:9090 --log-level debug
#
# State lives in ./.local/ of the checkout (ignored by git): the SQLite database and control-plane.env,
# which the first run fills with a generated ADMIN_JWT_SECRET and ADMIN_PASSWORD. The first run prints
# the operator's username and password and a curl command that signs in; later runs reuse them.
#
# Settings come from, strongest first: flags given to this script, variables already in your
# environment, .local/control-plane.env, the control plane's defaults (see README.md). DATABASE_URL
# defaults to sqlite://./.local/cloud-cli-proxy.db.
#
# Missing build prerequisites (pkg-config, sqlite3, build-essential) are installed with apt-get, through
# sudo when not run as root. cargo must already be installed.

set -euo pipefail

readonly BIN=cloud-cli-proxy-control-plane
readonly BUILD_PACKAGES=(pkg-config sqlite3 build-essential nftables util-linux iproute2 debootstrap)
readonly STATE_DIR=.local
readonly ENV_FILE=$STATE_DIR/control-plane.env

log() { printf 'quickstart: %s\n' "$*" >&2; }
die() {
    printf 'quickstart: error: %s\n' "$*" >&2
    exit 1
}

install_prerequisites() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "not a Debian-style system: make sure ${BUILD_PACKAGES[*]} (or their equivalents) are installed"
        return 0
    fi
    local pkg missing=()
    for pkg in "${BUILD_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0

    local as_root=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "missing ${missing[*]}: as root, run apt-get install -y ${missing[*]}"
        as_root=(sudo)
    fi
    log "installing ${missing[*]}"
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# Hosts are Docker containers: start the engine (installing Debian's docker.io if there is none).
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    local as_root=()
    [[ $EUID -eq 0 ]] || as_root=(sudo)
    if ! command -v dockerd >/dev/null 2>&1; then
        log "installing the Docker engine (docker.io)"
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
    fi
    log "starting the Docker engine"
    if command -v systemctl >/dev/null 2>&1 && "${as_root[@]}" systemctl start docker 2>/dev/null; then
        :
    else
        "${as_root[@]}" sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    local _
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "the Docker engine did not start (see /var/log/dockerd.log)"
}

# A random secret of letters and digits. The control plane refuses secrets that begin or end with a
# placeholder word, so the rare draw that does is thrown away.
generate_secret() {
    local secret
    while :; do
        secret=$(head -c 48 /dev/urandom | base64 -w0 | tr -d '=+/')
        [[ ${secret,,} =~ ^(changeme|secret|password|admin|example|jwt)|(changeme|secret|password|admin|example|jwt)$ ]] ||
            break
    done
    printf '%s' "$secret"
}

# Exports each KEY=VALUE of the env file that the environment does not set already. The file is parsed,
# not sourced, so an edited value never runs as code.
load_env_file() {
    local line key value
    while IFS= read -r line || [[ -n $line ]]; do
        [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[2]}
        value=${BASH_REMATCH[3]}
        if [[ ${#value} -ge 2 && ( ($value == \"*\" ) || ($value == \'*\') ) ]]; then
            value=${value:1:${#value}-2}
        fi
        [[ -n ${!key+set} ]] || export "$key=$value"
    done <"$1"
}

# The address the API will listen on, for the sign-in hint: --listen wins over CONTROL_PLANE_ADDR.
listen_addr() {
    local addr=${CONTROL_PLANE_ADDR:-:8080}
    while [[ $# -gt 0 ]]; do
        case $1 in
            --listen=*) addr=${1#--listen=} ;;
            --listen) [[ $# -lt 2 ]] || addr=$2 ;;
        esac
        shift
    done
    printf '%s' "$addr"
}

main() {
    cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.."

    install_prerequisites
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed: get Rust from https://rustup.rs"
    log "building $BIN and the egress tunnel runtime (release)"
    cargo build --release --bin "$BIN" --bin cloud-cli-proxy-egress
    local bin=${CARGO_TARGET_DIR:-target}/release/$BIN
    [[ -x $bin ]] || die "the build did not produce $bin"
    # Proxy egress (socks, http, shadowsocks, vmess, vless, trojan) runs sing-box.
    log "installing sing-box (skipped when present)"
    if [[ $EUID -eq 0 ]]; then
        deploy/scripts/install-sing-box.sh >&2
    else
        sudo deploy/scripts/install-sing-box.sh >&2
    fi
    ensure_docker
    log "building the host image (skipped when up to date; a few minutes the first time)"
    images/build.sh host >&2

    # Also applies to the database the server creates: it holds password hashes.
    umask 077
    mkdir -p "$STATE_DIR"
    local first_run=false
    if [[ ! -e $ENV_FILE ]]; then
        first_run=true
        {
            printf '# Written by deploy/scripts/quickstart.sh; see deploy/control-plane.env.example.\n'
            printf 'ADMIN_USERNAME=admin\n'
            printf 'ADMIN_PASSWORD=%s\n' "$(generate_secret)"
            printf 'ADMIN_JWT_SECRET=%s\n' "$(generate_secret)"
            printf 'DATABASE_URL=sqlite://./%s/cloud-cli-proxy.db\n' "$STATE_DIR"
        } >"$ENV_FILE.tmp"
        mv -- "$ENV_FILE.tmp" "$ENV_FILE"
    fi
    load_env_file "$ENV_FILE"
    export DATABASE_URL=${DATABASE_URL:-sqlite://./$STATE_DIR/cloud-cli-proxy.db}
    # The embedded agent keeps each host's secret files here.
    export AGENT_STATE_DIR=${AGENT_STATE_DIR:-$PWD/$STATE_DIR/agent}
    # The embedded SSH gateway keeps its host key and client key here.
    export SSH_PROXY_STATE_DIR=${SSH_PROXY_STATE_DIR:-$PWD/$STATE_DIR/ssh-proxy}

    local addr host port
    addr=$(listen_addr "$@")
    port=${addr##*:}
    host=${addr%:*}
    case $host in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
    local url="http://$host:$port"

    if $first_run; then
        cat >&2 <<EOF

  Operator account (shown this once; it is kept in $ENV_FILE):
    username: ${ADMIN_USERNAME:-admin}
    password: ${ADMIN_PASSWORD:-}
  Sign in once the server is up:
    curl -s -X POST $url/v1/auth/login -H 'Content-Type: application/json' \\
      -d '{"username":"${ADMIN_USERNAME:-admin}","password":"${ADMIN_PASSWORD:-}"}'

EOF
    else
        log "operator ${ADMIN_USERNAME:-admin}: the password is ADMIN_PASSWORD in $ENV_FILE"
    fi
    log "database $DATABASE_URL; API at $url (health: curl -s $url/healthz); Ctrl-C stops"
    exec "$bin" "$@"
}

main "$@"
