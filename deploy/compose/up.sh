#!/usr/bin/env bash
# Starts the compose deployment on this machine, from nothing to a healthy system:
#   1. the binaries (cargo build --release, unless CCP_BIN_DIR names prebuilt ones),
#   2. the images (images/build.sh host, runtime, postgres, haproxy; each skipped when up to date),
#   3. the settings (init.sh: .env and the secrets directory, once),
#   4. `docker-compose up -d` (or `docker compose` where that plugin is installed),
#   5. waits until the API answers through the balancer with an agent connected and both gateways
#      run, then prints the URL and where the operator's credentials are.
# Usage: deploy/compose/up.sh [ENV_FILE]     (default deploy/compose/.env; run as root)
# Environment: CCP_BIN_DIR (prebuilt binaries), UP_TIMEOUT_SECS (default 300), and init.sh's
# variables for a first start (HTTP_PORT, SSH_PORT, PUBLIC_BASE_URL, …).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
env_file=${1:-$here/.env}
timeout_secs=${UP_TIMEOUT_SECS:-300}
started=$SECONDS

say() { printf '[up %3ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() {
    printf 'up.sh: %s\n' "$*" >&2
    exit 1
}

((EUID == 0)) || die "run as root (Docker, debootstrap for the images, the agent's state directory)"
command -v docker >/dev/null || die "docker is not installed"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    die "neither the docker compose plugin nor docker-compose is installed (apt-get install -y docker-compose)"
fi

if [[ -z ${CCP_BIN_DIR:-} ]]; then
    command -v cargo >/dev/null || die "cargo is missing: install Rust, or set CCP_BIN_DIR to prebuilt binaries"
    say "building the binaries (cargo build --release)"
    (cd "$repo" && cargo build --release --locked -p control-plane -p agent -p ssh-proxy --bins)
fi

for image in host runtime postgres haproxy; do
    say "image $image"
    "$repo/images/build.sh" "$image" >/dev/null
done

"$here/init.sh" "$env_file"
# The values the checks below need, read without sourcing the file.
setting() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
project=$(setting COMPOSE_PROJECT_NAME)
http_port=$(setting HTTP_PORT)
compose+=(--project-name "${project:-cloud-cli-proxy}" --file "$here/compose.yaml" --env-file "$env_file")

say "starting ${compose[*]}"
"${compose[@]}" up -d

say "waiting for the API through the balancer with an agent connected (up to ${timeout_secs}s)"
deadline=$((SECONDS + timeout_secs))
until curl -fsS --max-time 5 "http://127.0.0.1:$http_port/healthz" 2>/dev/null | grep -q '"agent":"ok"'; do
    if ((SECONDS >= deadline)); then
        "${compose[@]}" ps >&2 || true
        die "not healthy after ${timeout_secs}s; see: ${compose[*]} logs"
    fi
    sleep 2
done
for gateway in gw1 gw2; do
    until [[ $(docker inspect --format '{{.State.Running}}' "$("${compose[@]}" ps -q "$gateway")" 2>/dev/null) == true ]]; do
        ((SECONDS < deadline)) || die "gateway $gateway is not running; see: ${compose[*]} logs $gateway"
        sleep 2
    done
done

say "up"
printf 'Dashboard and API: %s\n' "$(setting PUBLIC_BASE_URL)"
printf 'SSH gateway:       port %s (ssh -p %s USER@HOST)\n' "$(setting SSH_PORT)" "$(setting SSH_PORT)"
printf "Operator:          ADMIN_USERNAME and ADMIN_PASSWORD in %s\n" "$env_file"
printf 'Stop:              %s down\n' "${compose[*]}"
