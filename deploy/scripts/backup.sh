#!/usr/bin/env bash
# Online backup of the control plane's database (SQLite or PostgreSQL) and of the key that seals the
# secrets in it.
#
# Safe to run while the control plane is serving. SQLite: the copy is written by `VACUUM INTO`, which
# reads one consistent snapshot (WAL mode lets the server keep writing meanwhile), checked with
# `PRAGMA integrity_check` and compressed. PostgreSQL: `pg_dump --format=custom --no-owner --no-acl`
# reads one consistent snapshot (a repeatable-read transaction), and the archive is checked by reading
# it whole with `pg_restore`. Either way the backup is put in place under a name no other run can take.
#
# Usage:  deploy/scripts/backup.sh
#
# Environment:
#   BACKUP_DIR      where backups go (default /var/backups/cloud-cli-proxy)
#   RETENTION_DAYS  backups (of either kind) older than this many days are deleted after a successful
#                   run, keys with them; 0 keeps only the new one (default 7)
#   DATABASE_URL    sqlite://PATH, sqlite:PATH or a plain PATH (relative to the current directory), or
#                   postgres://USER:PASSWORD@HOST:PORT/DB (also postgresql://, with libpq's query
#                   parameters such as sslmode). When unset, the DATABASE_URL line of
#                   $CLOUD_CLI_PROXY_ENV_FILE (default /etc/cloud-cli-proxy/control-plane.env) is used,
#                   else sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db. A PostgreSQL password is
#                   taken out of the URL and handed to pg_dump in a temporary 0600 password file, never
#                   on a command line; without one, libpq's own PGPASSWORD, PGPASSFILE or ~/.pgpass apply.
#   SECRETS_KEY_FILE  the secrets key file; same lookup as DATABASE_URL, else (SQLite only) secrets.key
#                   beside the database. It is copied beside the backup as cloud-cli-proxy-STAMP.key
#                   (mode 0600): the tunnel keys, proxy passwords and VNC secrets in the database are
#                   sealed with it, so a backup without its key cannot give them back. Keep both, and
#                   keep them safe. With PostgreSQL it has no default: unset, the backup holds no key.
#
# Backups are named cloud-cli-proxy-YYYYmmddTHHMMSSZ.db.gz (SQLite) or cloud-cli-proxy-YYYYmmddTHHMMSSZ.dump
# (PostgreSQL), UTC, with -N added when that name is taken. Progress goes to stderr; the path of the new
# backup is the last line on stdout.
#
# Exit codes: 0 ok, 2 bad configuration, 3 a required tool is missing (sqlite3 and gzip, or pg_dump and
#             pg_restore), 4 the database does not exist (PostgreSQL: the server says so), 5 the backup
#             failed (PostgreSQL: also the server cannot be reached or refuses the login) or the copy did
#             not pass its check.

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

# Which kind of database a URL names: `sqlite` or `postgres`. Only the scheme is ever echoed, because
# URLs may carry a password.
backend_of() {
    case $1 in
        postgres://* | postgresql://*) printf postgres ;;
        sqlite:*) printf sqlite ;;
        *://*) die "$EXIT_CONFIG" "DATABASE_URL uses ${1%%://*}://: only SQLite and PostgreSQL are supported" ;;
        *) printf sqlite ;;
    esac
}

# File path named by a SQLite URL.
database_path() {
    local url=$1 path
    case $url in
        sqlite://*) path=${url#sqlite://} ;;
        sqlite:*) path=${url#sqlite:} ;;
        *) path=$url ;;
    esac
    path=${path%%\?*}
    [[ -n $path ]] || die "$EXIT_CONFIG" "DATABASE_URL names no file"
    [[ $path != :memory: ]] || die "$EXIT_CONFIG" "DATABASE_URL is an in-memory database: nothing to back up"
    printf '%s' "$path"
}

# Sets `decoded` to the bytes of a percent-encoded string; fails on a malformed escape or a NUL byte.
# No subshell, so that a trailing byte such as a space survives.
percent_decode() {
    local rest=$1 hex ch
    decoded=""
    while [[ $rest == *%* ]]; do
        decoded+=${rest%%\%*}
        rest=${rest#*%}
        hex=${rest:0:2}
        [[ $hex =~ ^[0-9A-Fa-f]{2}$ && $hex != 00 ]] || return 1
        printf -v ch %b "\\x$hex"
        decoded+=$ch
        rest=${rest:2}
    done
    decoded+=$rest
}

# Splits a PostgreSQL URL into `pg_url`, the same URL without its password (fit for a log line or a
# command line), and `pg_password`, the password percent-decoded (empty when there is none). The password
# may also be the query parameter `password`; `statement-cache-capacity` is sqlx's own and libpq would
# refuse it, so it is dropped.
pg_split() {
    local url=$1 scheme rest authority path userinfo="" hostport query="" param params=() kept=()
    scheme=${url%%://*}
    rest=${url#*://}
    authority=${rest%%[/?#]*}
    path=${rest:${#authority}}
    path=${path%%#*}
    hostport=$authority
    pg_password=""
    if [[ $authority == *@* ]]; then
        userinfo=${authority%@*}
        hostport=${authority##*@}
        if [[ $userinfo == *:* ]]; then
            percent_decode "${userinfo#*:}" || die "$EXIT_CONFIG" "the password in DATABASE_URL is not percent-encoded correctly"
            pg_password=$decoded
            userinfo=${userinfo%%:*}
        fi
    fi
    if [[ $path == *\?* ]]; then
        query=${path#*\?}
        path=${path%%\?*}
    fi
    [[ -z $query ]] || IFS='&' read -r -a params <<<"$query"
    for param in "${params[@]}"; do
        case $param in
            password=*)
                percent_decode "${param#password=}" || die "$EXIT_CONFIG" "the password in DATABASE_URL is not percent-encoded correctly"
                pg_password=$decoded
                ;;
            statement-cache-capacity=* | "") ;;
            *) kept+=("$param") ;;
        esac
    done
    pg_url="$scheme://${userinfo:+$userinfo@}$hostport$path"
    if [[ ${#kept[@]} -gt 0 ]]; then
        local IFS='&'
        pg_url+="?${kept[*]}"
    fi
    [[ $pg_password != *[$'\n\r']* ]] ||
        die "$EXIT_CONFIG" "the password in DATABASE_URL holds a line break, which a libpq password file cannot carry"
}

# Hands `pg_password` to libpq in a password file of mode 0600 in DIR, so that it is on no command line
# and in no log. A PGPASSWORD in the environment would win over the file, so it is dropped.
pg_use_password() {
    local dir=$1 escaped
    [[ -n $pg_password ]] || return 0
    escaped=${pg_password//\\/\\\\}
    escaped=${escaped//:/\\:}
    (umask 077 && printf '*:*:*:*:%s\n' "$escaped" >"$dir/pgpass") || die "$EXIT_FAILED" "cannot write a password file in $dir"
    export PGPASSFILE=$dir/pgpass
    unset PGPASSWORD
}

# The first error line a PostgreSQL tool wrote to FILE (libpq names the host, user and database in its
# messages, never the password).
first_error() {
    local line
    line=$(grep -m1 -E 'error|FATAL' -- "$1" 2>/dev/null) || line=$(head -n1 -- "$1" 2>/dev/null) || true
    printf '%s' "${line:-no message}"
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

# Writes $scratch/snapshot.db.gz from the SQLite database DB (an absolute path).
snapshot_sqlite() {
    local db=$1
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
}

# Writes $scratch/snapshot.dump from the PostgreSQL database at `pg_url`.
snapshot_postgres() {
    local errors=$scratch/errors
    pg_use_password "$scratch"
    log "dumping $pg_url"
    # Owners and grants are left out: the restored objects belong to whoever restores them, so a backup
    # moves between servers whose roles differ. --no-password: fail rather than wait for a prompt.
    if ! pg_dump --no-password --format=custom --no-owner --no-acl \
        --file="$scratch/snapshot.dump" --dbname="$pg_url" 2>"$errors"; then
        if grep -qE 'database ".*" does not exist' -- "$errors"; then
            die "$EXIT_NO_DATABASE" "$(first_error "$errors")"
        fi
        die "$EXIT_FAILED" "pg_dump could not dump $pg_url: $(first_error "$errors")"
    fi

    log "checking the archive"
    # --list reads the table of contents; writing the whole script to /dev/null reads and decompresses
    # every data block, which is what a restore will need.
    pg_restore --list -- "$scratch/snapshot.dump" >"$scratch/contents" 2>"$errors" ||
        die "$EXIT_FAILED" "the archive pg_dump wrote is not readable: $(first_error "$errors")"
    pg_restore --file=/dev/null -- "$scratch/snapshot.dump" 2>"$errors" ||
        die "$EXIT_FAILED" "the archive pg_dump wrote failed the check: $(first_error "$errors")"
    log "the archive holds $(grep -c ' TABLE DATA ' -- "$scratch/contents" || true) tables"
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

    local url backend db="" suffix key_default=""
    url=$(database_url)
    backend=$(backend_of "$url")
    if [[ $backend == postgres ]]; then
        require_tool pg_dump postgresql-client
        require_tool pg_restore postgresql-client
        pg_split "$url"
        suffix=.dump
    else
        require_tool sqlite3 sqlite3
        require_tool gzip gzip
        db=$(database_path "$url")
        [[ -f $db ]] || die "$EXIT_NO_DATABASE" "database $db does not exist"
        [[ -r $db ]] || die "$EXIT_NO_DATABASE" "database $db is not readable (run as root or as the service user)"
        # sqlite3 runs from the scratch directory below, so the path must not depend on the current one.
        db=$(realpath -- "$db")
        key_default="$(dirname -- "$db")/secrets.key"
        suffix=.db.gz
    fi

    umask 077
    mkdir -p -- "$backup_dir" || die "$EXIT_CONFIG" "cannot create $backup_dir"
    backup_dir=$(realpath -- "$backup_dir")

    # Scratch space inside the backup directory keeps the final link on one filesystem.
    scratch=$(mktemp -d "$backup_dir/.backup.XXXXXX") || die "$EXIT_FAILED" "cannot write to $backup_dir"
    trap cleanup EXIT

    local snapshot=$scratch/snapshot$suffix
    if [[ $backend == postgres ]]; then
        snapshot_postgres
    else
        snapshot_sqlite "$db"
    fi
    chmod 0600 -- "$snapshot"
    sync -- "$snapshot" 2>/dev/null || true

    # The key matches the snapshot unless a key rotation ran in the seconds between them; rotations
    # are run by hand with the service stopped, so schedule backups away from them.
    local key have_key=false
    key=$(setting SECRETS_KEY_FILE "$key_default")
    if [[ -z $key ]]; then
        log "warning: SECRETS_KEY_FILE is not set: the backup holds no key (set it to the control plane's key file)"
    elif [[ -e $key ]]; then
        [[ -r $key ]] || die "$EXIT_FAILED" "secrets key $key is not readable (run as root or as the service user)"
        cp -- "$key" "$scratch/snapshot.key" || die "$EXIT_FAILED" "cannot copy $key"
        chmod 0600 -- "$scratch/snapshot.key"
        sync -- "$scratch/snapshot.key" 2>/dev/null || true
        have_key=true
    else
        log "warning: no secrets key at $key: the backup holds no key (set SECRETS_KEY_FILE if it lives elsewhere)"
    fi

    # link(2) never replaces an existing file, so two runs within the same second cannot collide. A name
    # taken by a backup of the other kind is skipped too: the key's name must belong to one backup.
    local stamp base dest n=0
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    base="$backup_dir/$PREFIX$stamp"
    until [[ ! -e $base.db.gz && ! -e $base.dump ]] && ln -- "$snapshot" "$base$suffix" 2>/dev/null; do
        [[ -e $base.db.gz || -e $base.dump ]] || die "$EXIT_FAILED" "cannot create $base$suffix"
        n=$((n + 1))
        base="$backup_dir/$PREFIX$stamp-$n"
    done
    dest=$base$suffix
    log "wrote $dest ($(du -h -- "$dest" | cut -f1))"
    if $have_key; then
        # Named after the backup it belongs to; a stale key of that name (its backup gone) is replaced.
        ln -f -- "$scratch/snapshot.key" "$base.key" || die "$EXIT_FAILED" "cannot create $base.key"
        log "wrote $base.key (the secrets key: keep it with the backup)"
    fi

    # Both kinds of backup age out, so a move from SQLite to PostgreSQL leaves no backups behind forever.
    # RETENTION_DAYS=0 drops the age test: every backup but the one just written goes.
    local age=() old
    [[ $retention_days -eq 0 ]] || age=(-mmin "+$((retention_days * 24 * 60))")
    while IFS= read -r -d '' old; do
        log "retention: removing $old"
        case $old in
            *.db.gz) rm -f -- "$old" "${old%.db.gz}.key" ;;
            *) rm -f -- "$old" "${old%.dump}.key" ;;
        esac
    done < <(find "$backup_dir" -maxdepth 1 -type f \( -name "$PREFIX*.db.gz" -o -name "$PREFIX*.dump" \) \
        ! -name "${dest##*/}" "${age[@]}" -print0)

    printf '%s\n' "$dest"
}

main "$@"
