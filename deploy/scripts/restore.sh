#!/usr/bin/env bash
# Restore the control plane's database (SQLite or PostgreSQL) from a backup made by backup.sh, with its
# secrets key.
#
# Usage:  deploy/scripts/restore.sh BACKUP_FILE [--force] [--key KEY_FILE]
#
# The secrets key is taken from KEY_FILE, else from the file backup.sh wrote beside the backup
# (cloud-cli-proxy-STAMP.key for cloud-cli-proxy-STAMP.db.gz or .dump), and installed as
# SECRETS_KEY_FILE (mode 0600). Without a key the database is restored alone, and the control plane
# refuses to start unless the key already in place is the one its secrets were sealed with.
#
# SQLite (DATABASE_URL sqlite:…): BACKUP_FILE is a `.db.gz` from backup.sh or a plain SQLite file. It is
# unpacked next to the target, must pass `PRAGMA integrity_check`, and then replaces the target in one
# rename, with mode 0600 and the owner of the database it replaces (or of its directory). With --force
# the old database and its stale -wal/-shm/-journal files are removed.
#
# PostgreSQL (DATABASE_URL postgres://… or postgresql://…): BACKUP_FILE is a `.dump` from backup.sh (a
# pg_dump custom-format archive). The target database must exist (CREATE DATABASE … OWNER the service's
# role); it is restored with `pg_restore --single-transaction --no-owner --no-acl`, so a failure leaves
# it as it was, and the objects belong to the role of DATABASE_URL. A database that already holds
# tables is refused; with --force the backup's objects are dropped and recreated (`--clean --if-exists`),
# and tables the backup does not hold are left in place and named in a warning. The password is handed
# to pg_restore and psql in a temporary 0600 password file, never on a command line.
#
# A `.db.gz` or SQLite file with a PostgreSQL DATABASE_URL, or a `.dump` with a SQLite one, is refused
# (exit 2): the backup and the database must be of the same kind.
#
# Stop the control plane first (systemctl stop cloud-cli-proxy-control-plane; with PostgreSQL, every
# replica): a running server keeps writing. The restore refuses to run while that unit is active, and
# refuses to replace an existing database, unless --force is given. Take a backup first if you may want
# the old data back.
#
# Environment:
#   DATABASE_URL        the database to restore into; same rules as backup.sh: sqlite://PATH, sqlite:PATH
#                       or a plain PATH, or postgres://USER:PASSWORD@HOST:PORT/DB. When unset, the
#                       DATABASE_URL line of $CLOUD_CLI_PROXY_ENV_FILE (default
#                       /etc/cloud-cli-proxy/control-plane.env) is used, else
#                       sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db
#   SECRETS_KEY_FILE    where the key goes; same lookup as DATABASE_URL, else (SQLite only) secrets.key
#                       beside the database. With PostgreSQL a key to restore needs it set.
#   CONTROL_PLANE_UNIT  the systemd unit checked for activity (default cloud-cli-proxy-control-plane)
#
# Progress goes to stderr; the last line on stdout is the restored database: its path, or for
# PostgreSQL its URL without the password.
#
# Exit codes: 0 ok, 2 bad usage or configuration (also: the backup is of the other kind, the PostgreSQL
#             database does not exist, a key to restore and no SECRETS_KEY_FILE), 3 a required tool is
#             missing (sqlite3, gzip, or pg_restore and psql), 4 the backup file does not exist, 5 the
#             backup is damaged or the restore failed (PostgreSQL: also the server cannot be reached or
#             refuses the login), 6 refused (the database exists or holds tables, or the control plane
#             is running, and --force was not given).

set -euo pipefail

readonly EXIT_CONFIG=2 EXIT_TOOL=3 EXIT_NO_BACKUP=4 EXIT_FAILED=5 EXIT_REFUSED=6
readonly DEFAULT_DATABASE_URL="sqlite:///var/lib/cloud-cli-proxy/cloud-cli-proxy.db"
# Relations a restore would collide with: everything outside the system schemas.
readonly PG_USER_RELATIONS="FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'"

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
# so that each script can be installed on its own (so are the URL functions below).
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
    [[ $path != :memory: ]] || die "$EXIT_CONFIG" "DATABASE_URL is an in-memory database: nothing to restore into"
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


require_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$EXIT_TOOL" "$1 is not installed: apt-get install -y $2"
}

staged=""
staged_key=""
work=""
cleanup() {
    if [[ -n $staged ]]; then rm -f -- "$staged" "$staged-wal" "$staged-shm" "$staged-journal"; fi
    if [[ -n $staged_key ]]; then rm -f -- "$staged_key"; fi
    if [[ -n $work ]]; then rm -rf -- "$work"; fi
}

# What FILE holds, from its first bytes, else its name: `sqlite` (a SQLite file, or gzip as backup.sh
# writes it), `postgres` (a pg_dump custom-format archive) or `unknown`.
backup_kind() {
    local LC_ALL=C magic
    magic=$(head -c 15 -- "$1" | tr -d '\0')
    case $magic in
        PGDMP*) printf postgres ;;
        "SQLite format 3"* | $'\x1f\x8b'*) printf sqlite ;;
        *)
            case $1 in
                *.dump) printf postgres ;;
                *.db | *.gz | *.sqlite | *.sqlite3) printf sqlite ;;
                *) printf unknown ;;
            esac
            ;;
    esac
}

# Unpacks and checks BACKUP, then moves it into place as the SQLite database DB.
restore_sqlite() {
    local backup=$1 db=$2 force=$3 dir suffix
    dir=$(dirname -- "$db")
    local leftovers=false
    for suffix in "" -wal -shm -journal; do
        [[ ! -e $db$suffix ]] || leftovers=true
    done
    if $leftovers && ! $force; then
        die "$EXIT_REFUSED" "$db already exists: pass --force to replace it (run backup.sh first to keep a copy)"
    fi

    # Staged in the target directory so the final rename is atomic.
    staged=$(mktemp "$dir/.restore.XXXXXX") || die "$EXIT_FAILED" "cannot write to $dir"

    log "unpacking $backup"
    if [[ $backup == *.gz ]]; then
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
}

# Runs one query on the PostgreSQL database at `pg_url`; its rows, unaligned, on stdout.
pg_query() {
    psql --no-password --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 \
        --dbname="$pg_url" --command="$1"
}

# Restores the pg_dump archive BACKUP into the PostgreSQL database at `pg_url`, in one transaction.
restore_postgres() {
    local backup=$1 force=$2
    work=$(mktemp -d) || die "$EXIT_FAILED" "cannot make a temporary directory"
    local errors=$work/errors
    pg_use_password "$work"

    log "checking the backup"
    [[ $(head -c 5 -- "$backup") == PGDMP ]] ||
        die "$EXIT_FAILED" "$backup is not a pg_dump archive (custom format)"
    pg_restore --list -- "$backup" >"$work/contents" 2>"$errors" ||
        die "$EXIT_FAILED" "$backup is not a readable pg_dump archive: $(first_error "$errors")"

    log "looking into $pg_url"
    local count
    if ! count=$(pg_query "SELECT count(*) $PG_USER_RELATIONS" 2>"$errors"); then
        if grep -qE 'database ".*" does not exist' -- "$errors"; then
            die "$EXIT_CONFIG" "$(first_error "$errors") (create it first, owned by the control plane's role)"
        fi
        die "$EXIT_FAILED" "cannot query $pg_url: $(first_error "$errors")"
    fi
    local clean=() left=""
    if [[ $count -gt 0 ]]; then
        $force || die "$EXIT_REFUSED" "$pg_url is not empty ($count tables, views or sequences): pass --force to replace its contents (run backup.sh first to keep a copy)"
        clean=(--clean --if-exists)
        # --clean drops only what the backup holds; anything else stays, and the operator should know.
        local present
        present=$(pg_query "SELECT n.nspname || '.' || c.relname $PG_USER_RELATIONS AND c.relkind IN ('r', 'p')" 2>"$errors") ||
            die "$EXIT_FAILED" "cannot query $pg_url: $(first_error "$errors")"
        left=$(comm -23 <(sort <<<"$present") <(awk '$4 == "TABLE" && $5 != "DATA" { print $5 "." $6 }' "$work/contents" | sort) |
            paste -sd ' ')
        log "--force: dropping and recreating the backup's objects in $pg_url"
    fi

    log "restoring $backup into $pg_url in one transaction"
    pg_restore --no-password --single-transaction --exit-on-error --no-owner --no-acl "${clean[@]}" \
        --dbname="$pg_url" -- "$backup" 2>"$errors" ||
        die "$EXIT_FAILED" "the restore failed and was rolled back: $(first_error "$errors")"
    [[ -z $left ]] || log "warning: tables the backup does not hold were left in place: $left"
}

# Installs the key KEY_FROM as KEY_TO (mode 0600, owned like OWNER_REF when run as root), in one rename.
install_key() {
    local key_from=$1 key_to=$2 owner_ref=$3 key_dir
    key_dir=$(dirname -- "$key_to")
    mkdir -p -- "$key_dir" || die "$EXIT_FAILED" "cannot create $key_dir"
    staged_key=$(mktemp "$key_dir/.restore-key.XXXXXX") || die "$EXIT_FAILED" "cannot write to $key_dir"
    cat -- "$key_from" >"$staged_key" || die "$EXIT_FAILED" "cannot read $key_from"
    chmod 0600 -- "$staged_key"
    if [[ $EUID -eq 0 ]]; then
        [[ -e $owner_ref ]] || owner_ref=$key_dir
        chown --reference="$owner_ref" -- "$staged_key" || die "$EXIT_FAILED" "cannot set the owner of the restored key"
    fi
    sync -- "$staged_key" 2>/dev/null || true
    mv -f -T -- "$staged_key" "$key_to" || die "$EXIT_FAILED" "cannot move the restored key into place"
    staged_key=""
    sync -- "$key_dir" 2>/dev/null || true
    log "restored the secrets key to $key_to"
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
            -*) die "$EXIT_CONFIG" "unknown option $arg (usage: restore.sh BACKUP_FILE [--force] [--key KEY_FILE])" ;;
            *)
                [[ -z $backup ]] || die "$EXIT_CONFIG" "one backup file at a time (usage: restore.sh BACKUP_FILE [--force] [--key KEY_FILE])"
                backup=$arg
                ;;
        esac
    done
    ! $want_key || die "$EXIT_CONFIG" "--key needs a file"
    [[ -n $backup ]] || die "$EXIT_CONFIG" "no backup file given (usage: restore.sh BACKUP_FILE [--force] [--key KEY_FILE])"

    local url backend db="" dir="" key_default=""
    url=$(database_url)
    backend=$(backend_of "$url")
    if [[ $backend == postgres ]]; then
        require_tool pg_restore postgresql-client
        require_tool psql postgresql-client
        pg_split "$url"
    else
        require_tool sqlite3 sqlite3
        [[ $backup != *.gz ]] || require_tool gzip gzip
    fi
    [[ -f $backup ]] || die "$EXIT_NO_BACKUP" "backup $backup does not exist"
    [[ -r $backup ]] || die "$EXIT_NO_BACKUP" "backup $backup is not readable"
    case $backend:$(backup_kind "$backup") in
        postgres:sqlite) die "$EXIT_CONFIG" "$backup is a SQLite backup, but DATABASE_URL names a PostgreSQL database" ;;
        sqlite:postgres) die "$EXIT_CONFIG" "$backup is a PostgreSQL backup, but DATABASE_URL names a SQLite database" ;;
    esac
    if [[ $backend == sqlite ]]; then
        db=$(database_path "$url")
        dir=$(dirname -- "$db")
        [[ -d $dir ]] || die "$EXIT_CONFIG" "directory $dir of the database does not exist"
        [[ ! -d $db ]] || die "$EXIT_CONFIG" "$db is a directory"
        key_default=$dir/secrets.key
    fi

    local key_to
    key_to=$(setting SECRETS_KEY_FILE "$key_default")
    if [[ -z $key_from ]]; then
        local beside=${backup%.gz}
        beside=${beside%.db}
        beside="${beside%.dump}.key"
        [[ ! -f $beside ]] || key_from=$beside
    else
        [[ -f $key_from && -r $key_from ]] || die "$EXIT_NO_BACKUP" "key $key_from does not exist or is not readable"
    fi
    if [[ -n $key_from ]]; then
        [[ -n $key_to ]] || die "$EXIT_CONFIG" "SECRETS_KEY_FILE is not set: set it to the control plane's key file, where $key_from goes"
        [[ $(stat -c %s -- "$key_from") -eq 32 ]] || die "$EXIT_FAILED" "$key_from is not a secrets key (it must hold 32 bytes)"
        if [[ -e $key_to ]] && ! cmp -s -- "$key_from" "$key_to" && ! $force; then
            die "$EXIT_REFUSED" "$key_to holds another key: pass --force to replace it"
        fi
    elif [[ -z $key_to ]]; then
        log "warning: no key beside $backup and SECRETS_KEY_FILE is not set: the control plane will not start if the backup holds sealed secrets and its key is not in place"
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

    umask 077
    trap cleanup EXIT
    local restored owner_ref
    if [[ $backend == postgres ]]; then
        restore_postgres "$backup" "$force"
        restored=$pg_url
        # The key keeps the owner of the key it replaces, else of its directory.
        owner_ref=$key_to
    else
        restore_sqlite "$backup" "$db" "$force"
        restored=$db
        owner_ref=$db
    fi
    [[ -z $key_from ]] || install_key "$key_from" "$key_to" "$owner_ref"

    log "restored $restored from $backup; start the control plane again (systemctl start $unit)"
    printf '%s\n' "$restored"
}

main "$@"
