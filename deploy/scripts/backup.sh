#!/usr/bin/env bash
# Online backup of the control plane's SQLite database and of the key that seals the secrets in it.
#
# Safe to run while the control plane is serving: the copy is written by `VACUUM INTO`, which reads one
# consistent snapshot (WAL mode lets the server keep writing meanwhile). The copy is checked with
# `PRAGMA integrity_check`, compressed, and put in place under a name no other run can take.
#
# Usage:  deploy/scripts/backup.sh
#
# Environment:
#   BACKUP_DIR      where backups go (default /var/backups/cloud-cli-proxy)
#   RETENTION_DAYS  backups older than this many days are deleted after a successful run; 0 keeps only
#                   the new one (default 7)
#   DATABASE_URL    sqlite://PATH, sqlite:PATH or a plain PATH (relative to the current directory). When
#                   unset, the DATABASE_URL line of $CLOUD_CLI_PROXY_ENV_FILE (default
#                   /etc/cloud-cli-proxy/control-plane.env) is used, else
#                   sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db
#   SECRETS_KEY_FILE  the secrets key file; same lookup as DATABASE_URL, else secrets.key beside the
#                   database. It is copied beside the backup as cloud-cli-proxy-STAMP.key (mode 0600):
#                   the tunnel keys, proxy passwords and VNC secrets in the database are sealed with it,
#                   so a backup without its key cannot give them back. Keep both, and keep them safe.
#
# Progress goes to stderr; the path of the new backup is the last line on stdout.
#
# Exit codes: 0 ok, 2 bad configuration, 3 a required tool is missing, 4 the database does not exist,
#             5 the backup failed or the copy did not pass the integrity check.

set -euo pipefail

readonly EXIT_CONFIG=2 EXIT_TOOL=3 EXIT_NO_DATABASE=4 EXIT_FAILED=5
readonly DEFAULT_DATABASE_URL="sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db"
readonly PREFIX="cloud-cli-proxy-"

log() { printf 'backup: %s\n' "$*" >&2; }
die() {
    local code=$1
    shift
    printf 'backup: error: %s\n' "$*" >&2
    exit "$code"
}

# Value of KEY in a systemd-style environment file, without sourcing it (the file also holds secrets and
# must never be executed). The last assignment wins, as with systemd.
env_file_value() {
    local file=$1 key=$2 line value=""
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        line=${line#"${line%%[![:space:]]*}"}
        line=${line#export }
        [[ $line == "$key="* ]] || continue
        value=${line#"$key="}
        value=${value%"${value##*[![:space:]]}"}
        if [[ ${#value} -ge 2 && ( ($value == \"*\" ) || ($value == \'*\') ) ]]; then
            value=${value:1:${#value}-2}
        fi
    done <"$file"
    printf '%s' "$value"
}

# The value of a setting: the environment, then the service's env file, then DEFAULT.
setting() {
    local key=$1 default=$2 env_file=${CLOUD_CLI_PROXY_ENV_FILE:-/etc/cloud-cli-proxy/control-plane.env} value=""
    if [[ -n ${!key:-} ]]; then
        printf '%s' "${!key}"
        return
    fi
    if [[ -e $env_file ]]; then
        [[ -r $env_file ]] || die "$EXIT_CONFIG" "cannot read $env_file (run as root, or set $key)"
        value=$(env_file_value "$env_file" "$key")
    fi
    printf '%s' "${value:-$default}"
}

database_url() {
    setting DATABASE_URL "$DEFAULT_DATABASE_URL"
}

# File path named by a SQLite URL. Anything else is refused; only the scheme is echoed because other
# URLs may carry a password.
database_path() {
    local url=$1 path
    case $url in
        sqlite://*) path=${url#sqlite://} ;;
        sqlite:*) path=${url#sqlite:} ;;
        *://*) die "$EXIT_CONFIG" "DATABASE_URL uses ${url%%://*}://, not SQLite: back that database up with its own tools" ;;
        *) path=$url ;;
    esac
    path=${path%%\?*}
    [[ -n $path ]] || die "$EXIT_CONFIG" "DATABASE_URL names no file"
    [[ $path != :memory: ]] || die "$EXIT_CONFIG" "DATABASE_URL is an in-memory database: nothing to back up"
    printf '%s' "$path"
}

scratch=""
cleanup() {
    if [[ -n $scratch ]]; then rm -rf -- "$scratch"; fi
}

require_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$EXIT_TOOL" "$1 is not installed: apt-get install -y $2"
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
}

main() {
    if [[ ${1:-} == -h || ${1:-} == --help ]]; then
        usage
        return 0
    fi
    [[ $# -eq 0 ]] || die "$EXIT_CONFIG" "no arguments expected (configure with BACKUP_DIR, RETENTION_DAYS, DATABASE_URL)"

    local backup_dir=${BACKUP_DIR:-/var/backups/cloud-cli-proxy}
    local retention_days=${RETENTION_DAYS:-7}
    [[ $retention_days =~ ^[0-9]+$ ]] ||
        die "$EXIT_CONFIG" "RETENTION_DAYS must be a whole number of days, got '$retention_days'"
    retention_days=$((10#$retention_days))
    [[ -n $backup_dir ]] || die "$EXIT_CONFIG" "BACKUP_DIR is empty"

    require_tool sqlite3 sqlite3
    require_tool gzip gzip

    local url db
    url=$(database_url)
    db=$(database_path "$url")
    [[ -f $db ]] || die "$EXIT_NO_DATABASE" "database $db does not exist"
    [[ -r $db ]] || die "$EXIT_NO_DATABASE" "database $db is not readable (run as root or as the service user)"
    # sqlite3 runs from the scratch directory below, so the path must not depend on the current one.
    db=$(realpath -- "$db")

    umask 077
    mkdir -p -- "$backup_dir" || die "$EXIT_CONFIG" "cannot create $backup_dir"
    backup_dir=$(realpath -- "$backup_dir")

    # Scratch space inside the backup directory keeps the final link on one filesystem.
    scratch=$(mktemp -d "$backup_dir/.backup.XXXXXX") || die "$EXIT_FAILED" "cannot write to $backup_dir"
    trap cleanup EXIT

    log "copying $db"
    # VACUUM INTO reads the whole database inside one read transaction, so the copy is one consistent
    # snapshot however busy the server is (`.backup` starts over each time another process writes).
    # .timeout waits out a lock held while the server checkpoints instead of failing at once.
    (cd "$scratch" && sqlite3 -bail -cmd ".timeout 30000" "$db" "VACUUM INTO 'snapshot.db';") ||
        die "$EXIT_FAILED" "sqlite3 could not copy $db"

    log "checking the copy"
    local verdict
    verdict=$(cd "$scratch" && sqlite3 snapshot.db "PRAGMA integrity_check;" 2>&1) || true
    [[ $verdict == ok ]] || die "$EXIT_FAILED" "the copy of $db failed the integrity check: ${verdict%%$'\n'*}"

    log "compressing"
    gzip -9 -n -- "$scratch/snapshot.db" || die "$EXIT_FAILED" "gzip failed"
    chmod 0600 -- "$scratch/snapshot.db.gz"
    sync -- "$scratch/snapshot.db.gz" 2>/dev/null || true

    # The key matches the snapshot unless a key rotation ran in the seconds between them; rotations
    # are run by hand with the service stopped, so schedule backups away from them.
    local key have_key=false
    key=$(setting SECRETS_KEY_FILE "$(dirname -- "$db")/secrets.key")
    if [[ -e $key ]]; then
        [[ -r $key ]] || die "$EXIT_FAILED" "secrets key $key is not readable (run as root or as the service user)"
        cp -- "$key" "$scratch/snapshot.key" || die "$EXIT_FAILED" "cannot copy $key"
        chmod 0600 -- "$scratch/snapshot.key"
        sync -- "$scratch/snapshot.key" 2>/dev/null || true
        have_key=true
    else
        log "warning: no secrets key at $key: the backup holds no key (set SECRETS_KEY_FILE if it lives elsewhere)"
    fi

    # link(2) never replaces an existing file, so two runs within the same second cannot collide.
    local stamp dest n=0
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    dest="$backup_dir/$PREFIX$stamp.db.gz"
    until ln -- "$scratch/snapshot.db.gz" "$dest" 2>/dev/null; do
        [[ -e $dest ]] || die "$EXIT_FAILED" "cannot create $dest"
        n=$((n + 1))
        dest="$backup_dir/$PREFIX$stamp-$n.db.gz"
    done
    log "wrote $dest ($(du -h -- "$dest" | cut -f1))"
    if $have_key; then
        # Named after the backup it belongs to; a stale key of that name (its backup gone) is replaced.
        ln -f -- "$scratch/snapshot.key" "${dest%.db.gz}.key" || die "$EXIT_FAILED" "cannot create ${dest%.db.gz}.key"
        log "wrote ${dest%.db.gz}.key (the secrets key: keep it with the backup)"
    fi

    # RETENTION_DAYS=0 drops the age test: every backup but the one just written goes.
    local age=() old
    [[ $retention_days -eq 0 ]] || age=(-mmin "+$((retention_days * 24 * 60))")
    while IFS= read -r -d '' old; do
        log "retention: removing $old"
        rm -f -- "$old" "${old%.db.gz}.key"
    done < <(find "$backup_dir" -maxdepth 1 -type f -name "$PREFIX*.db.gz" ! -name "${dest##*/}" "${age[@]}" -print0)

    printf '%s\n' "$dest"
}

main "$@"
