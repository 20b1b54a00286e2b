#!/usr/bin/env bash
# Install cloud-cli-proxy on a Debian machine with systemd, from a built checkout of this repository.
#
# Usage:  sudo deploy/scripts/install.sh [--bin-dir DIR] [--no-start]
#
#   --bin-dir DIR  where the release binaries are (default: target/release of this checkout;
#                  build them with `cargo build --release --workspace --bins`)
#   --no-start     install and enable, but do not (re)start the control plane
#
# What it does, each step safe to repeat:
#   - creates the system user `cloud-cli-proxy` (and the `docker` group if Docker is not installed yet);
#   - installs the binaries to /usr/local/bin (the command-line client `cloud-cli-proxy` among them,
#     with its bash completion), backup.sh and restore.sh as
#     /usr/local/sbin/cloud-cli-proxy-backup and /usr/local/sbin/cloud-cli-proxy-restore;
#   - writes /etc/cloud-cli-proxy/control-plane.env with a fresh ADMIN_JWT_SECRET and ADMIN_PASSWORD
#     when that file does not exist yet (the password is printed this one time), and leaves it alone
#     otherwise;
#   - creates the secrets key /var/lib/cloud-cli-proxy/secrets.key (32 random bytes, mode 0600, owned
#     by the service user) when it does not exist yet, and never replaces one;
#   - installs the systemd units, reloads systemd, enables the control plane and the daily backup
#     timer, and (re)starts the control plane so a new binary takes over.
# The SSH gateway and agent units are installed but not enabled.

set -euo pipefail

readonly SERVICE_USER=cloud-cli-proxy
readonly CONF_DIR=/etc/cloud-cli-proxy
readonly ENV_FILE=$CONF_DIR/control-plane.env
readonly STATE_DIR=/var/lib/cloud-cli-proxy
readonly BACKUP_DIR=/var/backups/cloud-cli-proxy
readonly UNIT_DIR=/etc/systemd/system
readonly BINARIES=(cloud-cli-proxy-control-plane cloud-cli-proxy-ssh-proxy cloud-cli-proxy-agent
    cloud-cli-proxy-egress cloud-cli-proxy-probe cloud-cli-proxy)
readonly BASH_COMPLETION_DIR=/usr/share/bash-completion/completions

log() { printf 'install: %s\n' "$*" >&2; }
die() {
    printf 'install: error: %s\n' "$*" >&2
    exit 1
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

# The example configuration with the two secrets filled in.
render_env_file() {
    local example=$1 jwt_secret=$2 admin_password=$3 line
    while IFS= read -r line || [[ -n $line ]]; do
        case $line in
            ADMIN_JWT_SECRET=) line="ADMIN_JWT_SECRET=$jwt_secret" ;;
            ADMIN_PASSWORD=) line="ADMIN_PASSWORD=$admin_password" ;;
        esac
        printf '%s\n' "$line"
    done <"$example"
}

main() {
    local repo bin_dir start=true
    repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
    bin_dir=$repo/target/release
    while [[ $# -gt 0 ]]; do
        case $1 in
            --bin-dir)
                [[ $# -ge 2 ]] || die "--bin-dir needs a directory"
                bin_dir=$2
                shift 2
                ;;
            --no-start)
                start=false
                shift
                ;;
            -h | --help)
                sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
                return 0
                ;;
            *) die "unknown argument $1 (see --help)" ;;
        esac
    done

    [[ $EUID -eq 0 ]] || die "run as root: sudo $0"
    [[ -x $bin_dir/cloud-cli-proxy-control-plane ]] ||
        die "no $bin_dir/cloud-cli-proxy-control-plane: run cargo build --release --workspace --bins first"
    local example=$repo/deploy/control-plane.env.example
    [[ -f $example ]] || die "missing $example"

    # The backup's tools: sqlite3 always (the default database), pg_dump when the service already
    # keeps its state in PostgreSQL.
    local packages=()
    command -v sqlite3 >/dev/null 2>&1 || packages+=(sqlite3)
    if [[ -f $ENV_FILE ]] && grep -Eq '^[[:space:]]*(export )?DATABASE_URL=["'\'']?postgres(ql)?://' "$ENV_FILE" &&
        ! command -v pg_dump >/dev/null 2>&1; then
        packages+=(postgresql-client)
    fi
    if [[ ${#packages[@]} -gt 0 ]]; then
        log "installing ${packages[*]} (needed by the backup)"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"; } >/dev/null ||
            die "cannot install ${packages[*]}: apt-get install -y ${packages[*]}"
    fi

    # The unit joins `docker` for the socket; a group created here is adopted by Docker's package later.
    if ! getent group docker >/dev/null; then
        log "creating group docker"
        groupadd --system docker
    fi
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        log "creating user $SERVICE_USER"
        useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "cloud-cli-proxy control plane" "$SERVICE_USER"
    fi

    local bin
    for bin in "${BINARIES[@]}"; do
        if [[ -x $bin_dir/$bin ]]; then
            log "installing /usr/local/bin/$bin"
            install -m 0755 -o root -g root -- "$bin_dir/$bin" "/usr/local/bin/$bin"
        else
            log "skipping $bin (not built)"
        fi
    done
    if [[ -x /usr/local/bin/cloud-cli-proxy && -d ${BASH_COMPLETION_DIR%/*} ]]; then
        install -d -m 0755 "$BASH_COMPLETION_DIR"
        /usr/local/bin/cloud-cli-proxy completion bash >"$BASH_COMPLETION_DIR/cloud-cli-proxy"
        chmod 0644 "$BASH_COMPLETION_DIR/cloud-cli-proxy"
    fi
    # The egress tunnel runtime runs sing-box for proxy egress IPs.
    "$repo/deploy/scripts/install-sing-box.sh"
    install -m 0755 -o root -g root -- "$repo/deploy/scripts/backup.sh" /usr/local/sbin/cloud-cli-proxy-backup
    install -m 0755 -o root -g root -- "$repo/deploy/scripts/restore.sh" /usr/local/sbin/cloud-cli-proxy-restore

    install -d -m 0750 -o root -g root "$CONF_DIR"
    install -d -m 0700 -o root -g root "$BACKUP_DIR"
    local admin_password=""
    if [[ -e $ENV_FILE ]]; then
        log "keeping $ENV_FILE"
    else
        log "writing $ENV_FILE with fresh secrets"
        admin_password=$(generate_secret)
        # Written aside and renamed, so an interrupted run never leaves a half-written file to be kept.
        local staged
        staged=$(mktemp "$CONF_DIR/.control-plane.env.XXXXXX")
        render_env_file "$example" "$(generate_secret)" "$admin_password" >"$staged"
        chmod 0600 -- "$staged"
        mv -T -- "$staged" "$ENV_FILE"
    fi

    # The key that seals the secrets in the database. Made here so it exists, with the right owner and
    # mode, before the first start; the control plane would make one too, but only as itself.
    local key=$STATE_DIR/secrets.key
    if [[ -e $key ]]; then
        log "keeping $key"
    else
        log "creating $key"
        install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
        local staged_key
        staged_key=$(mktemp "$STATE_DIR/.secrets.key.XXXXXX")
        head -c 32 /dev/urandom >"$staged_key"
        chmod 0600 -- "$staged_key"
        chown "$SERVICE_USER:$SERVICE_USER" -- "$staged_key"
        mv -T -- "$staged_key" "$key"
    fi

    local unit
    for unit in "$repo"/deploy/systemd/*.service "$repo"/deploy/systemd/*.timer; do
        install -m 0644 -o root -g root -- "$unit" "$UNIT_DIR/${unit##*/}"
    done

    if [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl enable cloud-cli-proxy-control-plane.service cloud-cli-proxy-backup.timer
        if $start; then
            log "(re)starting cloud-cli-proxy-control-plane"
            systemctl restart cloud-cli-proxy-control-plane.service
            systemctl start cloud-cli-proxy-backup.timer
        fi
    else
        log "systemd is not running here: units installed but not enabled"
    fi

    log "done. Status: systemctl status cloud-cli-proxy-control-plane; logs: journalctl -u cloud-cli-proxy-control-plane"
    if [[ -n $admin_password ]]; then
        cat <<EOF

Operator account (shown only now; it is also in $ENV_FILE):
  username: admin
  password: $admin_password
Sign in:
  curl -s -X POST http://127.0.0.1:8080/v1/auth/login -H 'Content-Type: application/json' \\
    -d '{"username":"admin","password":"$admin_password"}'
EOF
    fi
}

main "$@"
