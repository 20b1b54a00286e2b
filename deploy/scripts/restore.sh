#!/usr/bin/env bash
# Restore the control plane's SQLite database from a backup made by backup.sh, with its secrets key.
#
# Usage:  deploy/scripts/restore.sh BACKUP_FILE [--force] [--key KEY_FILE]
#
# The secrets key is taken from KEY_FILE, else from the file backup.sh wrote beside the backup
# (cloud-cli-proxy-STAMP.key for cloud-cli-proxy-STAMP.db.gz), and installed as SECRETS_KEY_FILE (mode
# 0600). Without a key the database is restored alone, and the control plane refuses to start unless
# the key already in place is the one its secrets were sealed with.
#
# BACKUP_FILE is a `.db.gz` from backup.sh or a plain SQLite file. It is unpacked next to the target,
# must pass `PRAGMA integrity_check`, and then replaces the target in one rename, with mode 0600 and the
# owner of the database it replaces (or of its directory).
#
# Stop the control plane first (systemctl stop cloud-cli-proxy-control-plane): a running server keeps
# writing to the file it has open. The restore refuses to run while that unit is active, and refuses to
# replace an existing database, unless --force is given. With --force the old database and its stale
# -wal/-shm/-journal files are removed; take a backup first if you may want them back.
#
# Environment:
#   DATABASE_URL        the database to restore into; same rules as backup.sh: sqlite://PATH, sqlite:PATH
#                       or a plain PATH. When unset, the DATABASE_URL line of $CLOUD_CLI_PROXY_ENV_FILE
#                       (default /etc/cloud-cli-proxy/control-plane.env) is used, else
#                       sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db
#   SECRETS_KEY_FILE    where the key goes; same lookup as DATABASE_URL, else secrets.key beside the
#                       database
#   CONTROL_PLANE_UNIT  the systemd unit checked for activity (default cloud-cli-proxy-control-plane)
#
# Progress goes to stderr; the restored database path is the last line on stdout.
#
# Exit codes: 0 ok, 2 bad usage or configuration, 3 a required tool is missing, 4 the backup file does
#             not exist, 5 the backup is damaged or the restore failed, 6 refused (the database exists or
#             the control plane is running, and --force was not given).

set -euo pipefail

readonly EXIT_CONFIG=2 EXIT_TOOL=3 EXIT_NO_BACKUP=4 EXIT_FAILED=5 EXIT_REFUSED=6
readonly DEFAULT_DATABASE_URL="sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db"

log() { printf 'restore: %s\n' "$*" >&2; }
die() {
    local code=$1
    shift
    printf 'restore: error: %s\n' "$*" >&2
    exit "$code"
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"
}

# Value of KEY in a systemd-style environment file, without sourcing it (the file also holds secrets and
# must never be executed). The last assignment wins, as with systemd. Same parser as backup.sh, repeated
# so that each script can be installed on its own.
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
        *://*) die "$EXIT_CONFIG" "DATABASE_URL uses ${url%%://*}://, not SQLite: restore that database with its own tools" ;;
        *) path=$url ;;
    esac
    path=${path%%\?*}
    [[ -n $path ]] || die "$EXIT_CONFIG" "DATABASE_URL names no file"
    [[ $path != :memory: ]] || die "$EXIT_CONFIG" "DATABASE_URL is an in-memory database: nothing to restore into"
    printf '%s' "$path"
}

require_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$EXIT_TOOL" "$1 is not installed: apt-get install -y $2"
}

staged=""
staged_key=""
cleanup() {
    if [[ -n $staged ]]; then rm -f -- "$staged" "$staged-wal" "$staged-shm" "$staged-journal"; fi
    if [[ -n $staged_key ]]; then rm -f -- "$staged_key"; fi
}

main() {
    local backup="" force=false arg key_from="" want_key=false
    for arg in "$@"; do
        if $want_key; then
            key_from=$arg
            want_key=false
            continue
        fi
        case $arg in
            -h | --help)
                usage
                return 0
                ;;
            --force) force=true ;;
            --key) want_key=true ;;
            -*) die "$EXIT_CONFIG" "unknown option $arg (usage: restore.sh BACKUP_FILE [--force])" ;;
            *)
                [[ -z $backup ]] || die "$EXIT_CONFIG" "one backup file at a time (usage: restore.sh BACKUP_FILE [--force])"
                backup=$arg
                ;;
        esac
    done
    ! $want_key || die "$EXIT_CONFIG" "--key needs a file"
    [[ -n $backup ]] || die "$EXIT_CONFIG" "no backup file given (usage: restore.sh BACKUP_FILE [--force])"

    require_tool sqlite3 sqlite3
    [[ -f $backup ]] || die "$EXIT_NO_BACKUP" "backup $backup does not exist"
    [[ -r $backup ]] || die "$EXIT_NO_BACKUP" "backup $backup is not readable"
    local compressed=false
    if [[ $backup == *.gz ]]; then
        compressed=true
        require_tool gzip gzip
    fi

    local url db dir
    url=$(database_url)
    db=$(database_path "$url")
    dir=$(dirname -- "$db")
    [[ -d $dir ]] || die "$EXIT_CONFIG" "directory $dir of the database does not exist"
    [[ ! -d $db ]] || die "$EXIT_CONFIG" "$db is a directory"

    local key_to
    key_to=$(setting SECRETS_KEY_FILE "$dir/secrets.key")
    if [[ -z $key_from ]]; then
        local beside=${backup%.gz}
        beside="${beside%.db}.key"
        [[ ! -f $beside ]] || key_from=$beside
    else
        [[ -f $key_from && -r $key_from ]] || die "$EXIT_NO_BACKUP" "key $key_from does not exist or is not readable"
    fi
    if [[ -n $key_from ]]; then
        [[ $(stat -c %s -- "$key_from") -eq 32 ]] || die "$EXIT_FAILED" "$key_from is not a secrets key (it must hold 32 bytes)"
        if [[ -e $key_to ]] && ! cmp -s -- "$key_from" "$key_to" && ! $force; then
            die "$EXIT_REFUSED" "$key_to holds another key: pass --force to replace it"
        fi
    elif [[ -e $key_to ]]; then
        log "warning: no key beside $backup; keeping $key_to, which must be the key the backup's secrets were sealed with"
    else
        log "warning: no key beside $backup and none at $key_to: the control plane will not start if the backup holds sealed secrets (pass --key)"
    fi

    log "the control plane must be stopped while its database is replaced"
    local unit=${CONTROL_PLANE_UNIT:-cloud-cli-proxy-control-plane}
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
        $force || die "$EXIT_REFUSED" "$unit is running: systemctl stop $unit first (or pass --force)"
        log "warning: $unit is running; restoring anyway because of --force"
    fi
    local leftovers=false suffix
    for suffix in "" -wal -shm -journal; do
        [[ ! -e $db$suffix ]] || leftovers=true
    done
    if $leftovers && ! $force; then
        die "$EXIT_REFUSED" "$db already exists: pass --force to replace it (run backup.sh first to keep a copy)"
    fi

    # Staged in the target directory so the final rename is atomic.
    umask 077
    staged=$(mktemp "$dir/.restore.XXXXXX") || die "$EXIT_FAILED" "cannot write to $dir"
    trap cleanup EXIT

    log "unpacking $backup"
    if $compressed; then
        gzip -dc -- "$backup" >"$staged" || die "$EXIT_FAILED" "$backup is not a readable gzip file"
    else
        cat -- "$backup" >"$staged" || die "$EXIT_FAILED" "cannot read $backup"
    fi

    log "checking the backup"
    # An empty or foreign file would pass integrity_check as a new, empty database.
    [[ $(head -c 15 -- "$staged") == "SQLite format 3" ]] || die "$EXIT_FAILED" "$backup does not hold a SQLite database"
    local verdict
    verdict=$(sqlite3 "$staged" "PRAGMA integrity_check;" 2>&1) || true
    [[ $verdict == ok ]] || die "$EXIT_FAILED" "$backup failed the integrity check: ${verdict%%$'\n'*}"

    chmod 0600 -- "$staged"
    if [[ $EUID -eq 0 ]]; then
        # Keep the service user's ownership: a root-owned database would lock the control plane out.
        local owner_ref=$dir
        [[ ! -f $db ]] || owner_ref=$db
        chown --reference="$owner_ref" -- "$staged" || die "$EXIT_FAILED" "cannot set the owner of the restored file"
    fi
    sync -- "$staged" 2>/dev/null || true

    # The old WAL and journal belong to the old database: left beside the new one, SQLite would replay
    # them into it.
    for suffix in -wal -shm -journal; do
        if [[ -e $db$suffix ]]; then
            log "removing stale $db$suffix"
            rm -f -- "$db$suffix" || die "$EXIT_FAILED" "cannot remove $db$suffix"
        fi
    done
    mv -f -T -- "$staged" "$db" || die "$EXIT_FAILED" "cannot move the restored database into place"
    staged=""
    sync -- "$dir" 2>/dev/null || true

    if [[ -n $key_from ]]; then
        local key_dir
        key_dir=$(dirname -- "$key_to")
        mkdir -p -- "$key_dir" || die "$EXIT_FAILED" "cannot create $key_dir"
        staged_key=$(mktemp "$key_dir/.restore-key.XXXXXX") || die "$EXIT_FAILED" "cannot write to $key_dir"
        cat -- "$key_from" >"$staged_key" || die "$EXIT_FAILED" "cannot read $key_from"
        chmod 0600 -- "$staged_key"
        if [[ $EUID -eq 0 ]]; then
            chown --reference="$db" -- "$staged_key" || die "$EXIT_FAILED" "cannot set the owner of the restored key"
        fi
        sync -- "$staged_key" 2>/dev/null || true
        mv -f -T -- "$staged_key" "$key_to" || die "$EXIT_FAILED" "cannot move the restored key into place"
        staged_key=""
        sync -- "$key_dir" 2>/dev/null || true
        log "restored the secrets key to $key_to"
    fi

    log "restored $db from $backup; start the control plane again (systemctl start $unit)"
    printf '%s\n' "$db"
}

main "$@"
