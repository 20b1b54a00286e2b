#!/usr/bin/env bash
# Writes the compose deployment's settings once: deploy/compose/.env (or the file given) with random
# secrets, mode 0600, and the secrets directory beside it with the key that seals secrets in the
# database (shared by both control-plane replicas) and the SSH gateways' common host key. An
# existing file is left as it is (its secrets are in use); delete it and the volumes
# (`docker-compose down -v`) to start over.
#
# Usage: deploy/compose/init.sh [ENV_FILE]
# Any variable below may be set in the environment to override its default, e.g.
#   HTTP_PORT=9080 PUBLIC_BASE_URL=http://cloud.example.net:9080 deploy/compose/init.sh
# Needs root (the files are handed to the containers' service user, uid 10001) and ssh-keygen.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
env_file=${1:-$here/.env}
service_uid=10001

die() {
    printf 'init.sh: %s\n' "$*" >&2
    exit 2
}

if [[ -e $env_file ]]; then
    printf 'init.sh: %s exists; keeping it\n' "$env_file" >&2
    exit 0
fi
((EUID == 0)) || die "run as root: the secrets files are handed to the containers' user (uid $service_uid)"
command -v ssh-keygen >/dev/null || die "ssh-keygen is missing (apt-get install -y openssh-client)"

# Letters and digits only: the values go into a URL and an env file unquoted.
random() { tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"; }
# ADMIN_JWT_SECRET: the control plane refuses one that starts or ends with a placeholder word, which
# a random draw now and then does; such a draw is made again.
jwt_secret() {
    local secret
    while :; do
        secret=$(random 48)
        [[ ${secret,,} =~ ^(changeme|secret|password|admin|example|jwt)|(changeme|secret|password|admin|example|jwt)$ ]] ||
            break
    done
    printf '%s' "$secret"
}

env_dir=$(cd -- "$(dirname -- "$env_file")" && pwd)
secrets_dir=${SECRETS_DIR:-$env_dir/secrets}
state_dir=${STATE_DIR:-/var/lib/cloud-cli-proxy-compose}
http_port=${HTTP_PORT:-8080}
node_name=${NODE_NAME:-$(hostname -s | tr 'A-Z_' 'a-z-')}
public_host=${PUBLIC_HOST:-$(hostname -f 2>/dev/null || hostname)}
[[ $secrets_dir = /* && $state_dir = /* ]] || die "SECRETS_DIR and STATE_DIR must be absolute paths"
[[ $node_name =~ ^[a-z0-9][a-z0-9-]{0,40}$ ]] || die "NODE_NAME must be lower-case letters, digits and -"

umask 077
install -d -m 0700 "$secrets_dir"
install -d -m 0700 "$state_dir" "$state_dir/agent"
if [[ ! -e $secrets_dir/secrets.key ]]; then
    head -c 32 /dev/urandom >"$secrets_dir/secrets.key.new"
    mv "$secrets_dir/secrets.key.new" "$secrets_dir/secrets.key"
fi
chown "$service_uid:$service_uid" "$secrets_dir/secrets.key"
chmod 0600 "$secrets_dir/secrets.key"
if [[ ! -e $secrets_dir/gateway_host_ed25519_key ]]; then
    ssh-keygen -q -t ed25519 -N '' -C 'cloud-cli-proxy ssh gateway host key' \
        -f "$secrets_dir/gateway_host_ed25519_key"
fi

tmp=$(mktemp "$env_file.XXXXXX")
cat >"$tmp" <<ENV
# cloud-cli-proxy compose deployment, written by init.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Secrets: keep this file (mode 0600) and $secrets_dir out of version control and backups you
# would not trust with them.
COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-cloud-cli-proxy}

# The operator's account (the dashboard at PUBLIC_BASE_URL, and POST /v1/auth/login).
ADMIN_USERNAME=${ADMIN_USERNAME:-admin}
ADMIN_PASSWORD=$(random 24)
# Signs session and API tokens; changing it ends every session and API token.
ADMIN_JWT_SECRET=$(jwt_secret)
POSTGRES_PASSWORD=$(random 32)

# What users reach: the HTTP balancer (API, dashboard, access scripts) and the SSH balancer.
LISTEN_ADDR=${LISTEN_ADDR:-0.0.0.0}
HTTP_PORT=$http_port
SSH_PORT=${SSH_PORT:-2222}
PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-http://$public_host:$http_port}

# Loopback ports behind the balancers, and PostgreSQL's (published on 127.0.0.1 only).
CP1_PORT=${CP1_PORT:-18081}
CP2_PORT=${CP2_PORT:-18082}
GW1_PORT=${GW1_PORT:-12221}
GW2_PORT=${GW2_PORT:-12222}
PG_PORT=${PG_PORT:-15432}

# The node agent's name, its state (hosts' secret files; the same path inside the agent's container)
# and the image hosts run.
NODE_NAME=$node_name
STATE_DIR=$state_dir
HOST_IMAGE=${HOST_IMAGE:-cloud-cli-proxy/host:latest}
# secrets.key (seals secrets in the database; back it up with the database) and the gateways' host key.
SECRETS_DIR=$secrets_dir

CCP_RUNTIME_IMAGE=${CCP_RUNTIME_IMAGE:-cloud-cli-proxy/runtime:latest}
CCP_POSTGRES_IMAGE=${CCP_POSTGRES_IMAGE:-cloud-cli-proxy/postgres:latest}
CCP_HAPROXY_IMAGE=${CCP_HAPROXY_IMAGE:-cloud-cli-proxy/haproxy:latest}
LOG_LEVEL=${LOG_LEVEL:-info}
ENV
chmod 0600 "$tmp"
mv "$tmp" "$env_file"
printf 'init.sh: wrote %s (mode 0600) and %s\n' "$env_file" "$secrets_dir" >&2
