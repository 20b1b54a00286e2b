#!/usr/bin/env bash
# Drives deploy/scripts/backup.sh and restore.sh against a real SQLite file in a scratch directory:
# online copies, naming, retention, exit codes and the refusals; then the same against real PostgreSQL
# databases when CCP_TEST_POSTGRES names a role that may create them (the databases are made here and
# dropped at exit). CCP_REQUIRE_POSTGRES=1 turns a missing CCP_TEST_POSTGRES into a failure.

set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
backup=$repo/deploy/scripts/backup.sh
restore=$repo/deploy/scripts/restore.sh

work=$(mktemp -d)
pg_databases=()
cleanup() {
    local name
    for name in "${pg_databases[@]}"; do
        psql -X -qAt "$CCP_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf -- "$work"
}
trap cleanup EXIT
# Keep the machine's own configuration and services out of the picture.
export CLOUD_CLI_PROXY_ENV_FILE=$work/absent.env
export CONTROL_PLANE_UNIT=cloud-cli-proxy-test-unit-that-does-not-exist
unset DATABASE_URL BACKUP_DIR RETENTION_DAYS

passes=0 failures=0
pass() {
    printf 'ok    %s\n' "$1"
    passes=$((passes + 1))
}
fail() {
    printf 'FAIL  %s\n' "$1"
    failures=$((failures + 1))
}
# expect_status NAME STATUS COMMAND...: the command exits with STATUS; its stdout lands in $out.
expect_status() {
    local name=$1 want=$2 got=0
    shift 2
    out=$("$@" 2>"$work/stderr") || got=$?
    if [[ $got -eq $want ]]; then pass "$name"; else
        fail "$name: exit status $got, expected $want"
        sed 's/^/      /' "$work/stderr"
    fi
}
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
rows() { sqlite3 "$1" 'SELECT count(*) FROM a;'; }

db=$work/live/cloud-cli-proxy.db
mkdir -p "$work/live" "$work/backups"
sqlite3 "$db" 'PRAGMA journal_mode=wal; CREATE TABLE a(b); INSERT INTO a VALUES (1), (2), (3);' >/dev/null

# A writer keeps the database busy in WAL mode while backups run.
(
    for i in $(seq 1 200); do
        sqlite3 -cmd '.timeout 5000' "$db" "INSERT INTO a VALUES ($i);" || exit 1
    done
) &
writer=$!
for _ in 1 2 3; do
    expect_status "backup during writes" 0 env DATABASE_URL="sqlite://$db?mode=rwc" BACKUP_DIR="$work/backups" "$backup"
done
wait "$writer"
check "backups end up in BACKUP_DIR with the documented names" \
    test "$(find "$work/backups" -name 'cloud-cli-proxy-*.db.gz' | wc -l)" -eq 3
for f in "$work"/backups/*.db.gz; do
    gzip -dc "$f" >"$work/check.db"
    check "$(basename "$f") passes integrity_check" test "$(sqlite3 "$work/check.db" 'PRAGMA integrity_check;')" = ok
    rm -f "$work/check.db"
done

printf '# comment\nADMIN_PASSWORD=x\nDATABASE_URL="sqlite://%s"\n' "$db" >"$work/control-plane.env"
expect_status "backup reads DATABASE_URL from the env file" 0 \
    env CLOUD_CLI_PROXY_ENV_FILE="$work/control-plane.env" BACKUP_DIR="$work/backups" "$backup"
latest=${out##*$'\n'}
check "the last stdout line is the new backup" test -f "$latest"
check "the backup is mode 0600" test "$(stat -c %a "$latest")" = 600
check "the backup is named cloud-cli-proxy-YYYYmmddTHHMMSSZ[-N].db.gz" \
    grep -Eq '/cloud-cli-proxy-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?\.db\.gz$' <<<"$latest"

old=$work/backups/cloud-cli-proxy-20000101T000000Z.db.gz
recent=$work/backups/cloud-cli-proxy-20000102T000000Z.db.gz
unrelated=$work/backups/notes.db.gz
touch -d '10 days ago' "$old" "$unrelated"
touch -d '6 days ago' "$recent"
expect_status "backup with default retention" 0 env DATABASE_URL="$db" BACKUP_DIR="$work/backups" "$backup"
check "retention removes backups older than 7 days" test ! -e "$old"
check "retention keeps younger backups" test -e "$recent"
check "retention leaves other files alone" test -e "$unrelated"
expect_status "backup with RETENTION_DAYS=0" 0 env DATABASE_URL="$db" BACKUP_DIR="$work/backups" RETENTION_DAYS=0 "$backup"
check "RETENTION_DAYS=0 keeps only the new backup" \
    test "$(find "$work/backups" -name 'cloud-cli-proxy-*.db.gz' | wc -l)" -eq 1
latest=$out

expect_status "backup refuses a bad RETENTION_DAYS" 2 env DATABASE_URL="$db" BACKUP_DIR="$work/b2" RETENTION_DAYS=week "$backup"
expect_status "backup refuses a database it does not know" 2 env DATABASE_URL=mysql://u:p@db/ccp BACKUP_DIR="$work/b2" "$backup"
expect_status "backup reports a missing database" 4 env DATABASE_URL="sqlite://$work/none.db" BACKUP_DIR="$work/b2" "$backup"
printf 'not a database' >"$work/junk.db"
expect_status "backup fails on a file that is not a database" 5 env DATABASE_URL="$work/junk.db" BACKUP_DIR="$work/b2" "$backup"
mkdir -p "$work/nosqlite"
expect_status "backup names the package of a missing sqlite3" 3 env PATH="$work/nosqlite" "$BASH" "$backup"

target=$work/restored/cloud-cli-proxy.db
mkdir -p "$work/restored"
expect_status "restore into an empty place" 0 env DATABASE_URL="sqlite://$target" "$restore" "$latest"
check "restored database has the rows" test "$(rows "$target")" -eq 203
check "restored database is mode 0600" test "$(stat -c %a "$target")" = 600
expect_status "restore refuses to overwrite without --force" 6 env DATABASE_URL="sqlite://$target" "$restore" "$latest"

sqlite3 "$target" 'INSERT INTO a VALUES (-1);'
printf 'stale' >"$target-wal"
printf 'stale' >"$target-shm"
expect_status "restore --force replaces the database" 0 env DATABASE_URL="sqlite://$target" "$restore" "$latest" --force
check "--force removed the stale -wal and -shm" test ! -e "$target-wal" -a ! -e "$target-shm"
check "replaced database has the backup's rows" test "$(rows "$target")" -eq 203

gzip -dc "$latest" >"$work/plain.db"
expect_status "restore takes a plain .db" 0 env DATABASE_URL="$target" "$restore" --force "$work/plain.db"
expect_status "restore reports a missing backup" 4 env DATABASE_URL="$target" "$restore" "$work/none.db.gz"
printf 'garbage' | gzip >"$work/garbage.db.gz"
expect_status "restore refuses a backup that is not a database" 5 env DATABASE_URL="$target" "$restore" --force "$work/garbage.db.gz"
gzip </dev/null >"$work/empty.db.gz"
expect_status "restore refuses an empty backup" 5 env DATABASE_URL="$target" "$restore" --force "$work/empty.db.gz"
check "a refused restore leaves the database as it was" test "$(rows "$target")" -eq 203
check "a refused restore leaves no temporary files" \
    test "$(find "$work/restored" -mindepth 1 | wc -l)" -eq 1
expect_status "restore without a file is a usage error" 2 "$restore"

mkdir -p "$work/fakebin"
# A stand-in for systemctl that reports every unit as active.
cat >"$work/fakebin/systemctl" <<'EOF'
#!/bin/sh
test "$1" = is-active
EOF
chmod +x "$work/fakebin/systemctl"
rm -f "$target"
expect_status "restore refuses while the control plane is active" 6 \
    env PATH="$work/fakebin:$PATH" DATABASE_URL="$target" "$restore" "$latest"
expect_status "restore --force goes ahead while it is active" 0 \
    env PATH="$work/fakebin:$PATH" DATABASE_URL="$target" "$restore" "$latest" --force

# The secrets key travels with the backup: beside it, 0600, the same bytes; restore puts it back.
keyed=$work/keyed/cloud-cli-proxy.db
mkdir -p "$work/keyed" "$work/keyed-backups"
sqlite3 "$keyed" 'CREATE TABLE a(b); INSERT INTO a VALUES (1);'
(umask 077 && head -c 32 /dev/urandom >"$work/keyed/secrets.key")
expect_status "backup with a secrets key" 0 env DATABASE_URL="$keyed" BACKUP_DIR="$work/keyed-backups" "$backup"
kb=$out
check "the key is copied beside the backup" cmp -s "$work/keyed/secrets.key" "${kb%.db.gz}.key"
check "the copied key is mode 0600" test "$(stat -c %a "${kb%.db.gz}.key")" = 600
(umask 077 && head -c 32 /dev/urandom >"$work/other.key")
expect_status "SECRETS_KEY_FILE names the key to back up" 0 \
    env DATABASE_URL="$keyed" SECRETS_KEY_FILE="$work/other.key" BACKUP_DIR="$work/keyed-backups" "$backup"
check "the named key is the one copied" cmp -s "$work/other.key" "${out%.db.gz}.key"
old_kb=$work/keyed-backups/cloud-cli-proxy-20000101T000000Z
cp "$kb" "$old_kb.db.gz" && cp "${kb%.db.gz}.key" "$old_kb.key" && touch -d '2000-01-01' "$old_kb.db.gz" "$old_kb.key"
expect_status "backup with retention and keys" 0 env DATABASE_URL="$keyed" BACKUP_DIR="$work/keyed-backups" "$backup"
check "retention removes an old backup's key with it" test ! -e "$old_kb.key" -a ! -e "$old_kb.db.gz"

fresh=$work/fresh/cloud-cli-proxy.db
mkdir -p "$work/fresh"
expect_status "restore brings the key back" 0 env DATABASE_URL="$fresh" "$restore" "$kb"
check "the restored key is the backed-up one" cmp -s "$work/keyed/secrets.key" "$work/fresh/secrets.key"
check "the restored key is mode 0600" test "$(stat -c %a "$work/fresh/secrets.key")" = 600
(umask 077 && head -c 32 /dev/urandom >"$work/fresh/secrets.key")
rm -f "$fresh"
expect_status "restore refuses to replace another key without --force" 6 env DATABASE_URL="$fresh" "$restore" "$kb"
expect_status "restore --force replaces the key" 0 env DATABASE_URL="$fresh" "$restore" "$kb" --force
check "the key was replaced" cmp -s "$work/keyed/secrets.key" "$work/fresh/secrets.key"
expect_status "restore --key takes a key from elsewhere" 0 \
    env DATABASE_URL="$fresh" SECRETS_KEY_FILE="$work/fresh/named.key" "$restore" --force "$kb" --key "$work/other.key"
check "--key and SECRETS_KEY_FILE are honoured" cmp -s "$work/other.key" "$work/fresh/named.key"
printf 'short' >"$work/short.key"
expect_status "restore refuses a key of the wrong length" 5 env DATABASE_URL="$fresh" "$restore" --force "$kb" --key "$work/short.key"

# --- PostgreSQL ------------------------------------------------------------------------------------------

# The server's URL taken apart, so that tests can name other databases and write the password in other
# ways; a URL without a path or user is not supported here.
pg_parts() {
    local rest=${CCP_TEST_POSTGRES#*://} authority userinfo
    pg_scheme=${CCP_TEST_POSTGRES%%://*}
    authority=${rest%%/*}
    pg_query=""
    [[ $rest != *\?* ]] || pg_query="?${rest#*\?}"
    userinfo=${authority%@*}
    pg_hostport=${authority##*@}
    pg_user=${userinfo%%:*}
    pg_pass=""
    [[ $userinfo != *:* ]] || pg_pass=${userinfo#*:}
}
# pg_url NAME [PASSWORD]: URL of database NAME, with PASSWORD written as given (default: the server's).
pg_url() {
    local pass=${2-$pg_pass}
    printf '%s://%s%s@%s/%s%s' "$pg_scheme" "$pg_user" "${pass:+:$pass}" "$pg_hostport" "$1" "$pg_query"
}
# A new empty database, dropped at exit; its name on stdout.
pg_create() {
    local name
    name=ccp_br_$(tr -dc 'a-z0-9' </dev/urandom | head -c 12)
    psql -X -qAt -v ON_ERROR_STOP=1 "$CCP_TEST_POSTGRES" -c "CREATE DATABASE $name" >/dev/null
    printf '%s' "$name"
}
pg() { psql -X -qAt -v ON_ERROR_STOP=1 "$(pg_url "$1")" -c "$2"; }
pg_rows() { pg "$1" 'SELECT count(*) FROM a;'; }
# Every character of a string percent-encoded.
percent_encode_all() {
    local s=$1 i out=""
    for ((i = 0; i < ${#s}; i++)); do
        out+=$(printf '%%%02X' "'${s:i:1}")
    done
    printf '%s' "$out"
}
# A URL with a password in it: scheme://user:password@…
has_url_password() { grep -Eq '[a-z]+://[^/@[:space:]]*:[^/@[:space:]]*@|password=' "$@"; }

postgres_cases() {
    pg_parts
    local src dst pgdir=$work/pg real tool
    src=$(pg_create) && pg_databases+=("$src")
    dst=$(pg_create) && pg_databases+=("$dst")
    mkdir -p "$pgdir/backups" "$pgdir/spy" "$pgdir/live" "$pgdir/restored"
    pg "$src" 'CREATE TABLE a(id bigserial PRIMARY KEY, b int); INSERT INTO a(b) VALUES (1), (2), (3);' >/dev/null
    (umask 077 && head -c 32 /dev/urandom >"$pgdir/live/secrets.key")

    # Stand-ins in front of the real tools record the arguments and the password handed over.
    for tool in pg_dump pg_restore psql; do
        real=$(command -v "$tool")
        cat >"$pgdir/spy/$tool" <<SPY
#!/bin/sh
{
    printf '%s\\n' "\$*"
    printf 'PGPASSWORD=%s\\n' "\${PGPASSWORD:-}"
    if [ -n "\${PGPASSFILE:-}" ]; then printf 'passfile mode %s\\n' "\$(stat -c %a "\$PGPASSFILE")"; fi
} >>"$pgdir/spy.log"
exec "$real" "\$@"
SPY
        chmod +x "$pgdir/spy/$tool"
    done
    local spy_path=$pgdir/spy:$PATH

    # Writes go on while backups run: each backup is one consistent snapshot.
    (
        for i in $(seq 1 100); do
            pg "$src" "INSERT INTO a(b) VALUES ($i);" >/dev/null || exit 1
        done
    ) &
    local writer=$!
    for _ in 1 2; do
        expect_status "pg: backup during writes" 0 env PATH="$spy_path" DATABASE_URL="$(pg_url "$src")" \
            SECRETS_KEY_FILE="$pgdir/live/secrets.key" BACKUP_DIR="$pgdir/backups" "$backup"
    done
    wait "$writer"
    check "pg: backups are named cloud-cli-proxy-YYYYmmddTHHMMSSZ[-N].dump" \
        test "$(find "$pgdir/backups" -regextype posix-extended \
            -regex '.*/cloud-cli-proxy-[0-9]{8}T[0-9]{6}Z(-[0-9]+)?\.dump' | wc -l)" -eq 2
    local f
    for f in "$pgdir"/backups/*.dump; do
        check "pg: $(basename "$f") is a readable archive" pg_restore --list "$f" >/dev/null
        check "pg: $(basename "$f") is mode 0600" test "$(stat -c %a "$f")" = 600
        check "pg: its key is beside it, the same bytes" cmp -s "$pgdir/live/secrets.key" "${f%.dump}.key"
    done

    # The password written percent-encoded, character by character, must still be the password.
    local encoded
    encoded=$(percent_encode_all "$pg_pass")
    expect_status "pg: backup with a percent-encoded password" 0 env PATH="$spy_path" \
        DATABASE_URL="$(pg_url "$src" "$encoded")" SECRETS_KEY_FILE="$pgdir/live/secrets.key" \
        BACKUP_DIR="$pgdir/backups" "$backup"
    local pb=$out
    check "pg: the last stdout line is the new backup" test -f "$pb"
    check "pg: the backup holds every row" \
        test "$(pg_restore --data-only --table=a --file=- "$pb" | grep -cE '^[0-9]+'$'\t')" -eq 103
    check "pg: the password is in no log line" \
        test "$(grep -cF -- "$encoded" "$work/stderr")" -eq 0 -a "$(has_url_password "$work/stderr" && echo leak)" = ""
    local sep='?'
    [[ -z $pg_query ]] || sep='&'
    expect_status "pg: backup with the password as a query parameter" 0 env PATH="$spy_path" \
        DATABASE_URL="$(pg_url "$src" "")${sep}password=$encoded" BACKUP_DIR="$pgdir/backups" "$backup"
    check "pg: no password on any command line of pg_dump, pg_restore or psql" \
        test "$(grep -c . "$pgdir/spy.log")" -gt 0 -a "$(has_url_password "$pgdir/spy.log" && echo leak)" = ""
    check "pg: no password in PGPASSWORD; the password file is 0600" \
        test "$(grep -c '^PGPASSWORD=.' "$pgdir/spy.log")" -eq 0 -a \
        "$(grep '^passfile mode' "$pgdir/spy.log" | sort -u)" = "passfile mode 600"
    check "pg: a backup without SECRETS_KEY_FILE warns that it holds no key" \
        grep -q 'SECRETS_KEY_FILE is not set' "$work/stderr"
    check "pg: ... and writes no key" test ! -e "${out%.dump}.key"

    local wrong=not-the-password-$RANDOM
    expect_status "pg: backup with a wrong password fails" 5 env DATABASE_URL="$(pg_url "$src" "$wrong")" \
        BACKUP_DIR="$pgdir/b2" "$backup"
    check "pg: the refused password is in no log line" test "$(grep -cF -- "$wrong" "$work/stderr")" -eq 0
    expect_status "pg: backup reports a missing database" 4 \
        env DATABASE_URL="$(pg_url "${src}_absent")" BACKUP_DIR="$pgdir/b2" "$backup"
    mkdir -p "$pgdir/nopg"
    expect_status "pg: backup names the package of a missing pg_dump" 3 \
        env PATH="$pgdir/nopg" DATABASE_URL="$(pg_url "$src")" "$BASH" "$backup"
    check "pg: ... postgresql-client" grep -q 'apt-get install -y postgresql-client' "$work/stderr"
    local src_url
    src_url=$(pg_url "$src")
    expect_status "pg: a postgresql:// URL works too" 0 \
        env DATABASE_URL="postgresql://${src_url#*://}" BACKUP_DIR="$pgdir/b3" "$backup"

    # Retention covers both kinds of backup, and their keys.
    local old_dump=$pgdir/backups/cloud-cli-proxy-20000101T000000Z
    local old_db=$pgdir/backups/cloud-cli-proxy-20000102T000000Z
    local recent=$pgdir/backups/cloud-cli-proxy-20000103T000000Z
    cp "$pb" "$old_dump.dump" && cp "${pb%.dump}.key" "$old_dump.key"
    cp "$kb" "$old_db.db.gz" && cp "${kb%.db.gz}.key" "$old_db.key"
    cp "$pb" "$recent.dump"
    touch -d '10 days ago' "$old_dump.dump" "$old_dump.key" "$old_db.db.gz" "$old_db.key"
    touch -d '6 days ago' "$recent.dump"
    expect_status "pg: backup with retention" 0 env DATABASE_URL="$(pg_url "$src")" BACKUP_DIR="$pgdir/backups" "$backup"
    check "pg: retention removes old .dump and .db.gz backups and their keys" \
        test ! -e "$old_dump.dump" -a ! -e "$old_dump.key" -a ! -e "$old_db.db.gz" -a ! -e "$old_db.key"
    check "pg: retention keeps younger backups" test -e "$recent.dump"

    # Restore: into an empty database, with the key.
    local key_to=$pgdir/restored/secrets.key
    : >"$pgdir/spy.log"
    expect_status "pg: restore into an empty database" 0 env PATH="$spy_path" DATABASE_URL="$(pg_url "$dst")" \
        SECRETS_KEY_FILE="$key_to" "$restore" "$pb"
    check "pg: the restored database has the rows" test "$(pg_rows "$dst")" -eq 103
    check "pg: the restored sequence goes on from the backup's" \
        test "$(pg "$dst" 'INSERT INTO a(b) VALUES (0) RETURNING id;')" -eq 104
    check "pg: the last stdout line is the database's URL without its password" \
        test "$out" = "$(pg_url "$dst" "")"
    check "pg: the key is restored, mode 0600" \
        test "$(cmp -s "$pgdir/live/secrets.key" "$key_to" && stat -c %a "$key_to")" = 600
    check "pg: restore puts no password on a command line, in PGPASSWORD or in a log line" \
        test "$(has_url_password "$pgdir/spy.log" "$work/stderr" && echo leak)" = "" -a \
        "$(grep -c '^PGPASSWORD=.' "$pgdir/spy.log")" -eq 0 -a "$(grep -c '^passfile mode 600' "$pgdir/spy.log")" -gt 0
    expect_status "pg: restore refuses a database that holds tables" 6 \
        env DATABASE_URL="$(pg_url "$dst")" SECRETS_KEY_FILE="$key_to" "$restore" "$pb"
    check "pg: a refused restore leaves the database as it was" test "$(pg_rows "$dst")" -eq 104

    pg "$dst" 'CREATE TABLE extra(x int);' >/dev/null
    expect_status "pg: restore --force replaces the backup's objects" 0 \
        env DATABASE_URL="$(pg_url "$dst")" SECRETS_KEY_FILE="$key_to" "$restore" --force "$pb"
    check "pg: the replaced database has the backup's rows" test "$(pg_rows "$dst")" -eq 103
    check "pg: --force names the tables the backup does not hold" grep -q 'left in place: public.extra' "$work/stderr"

    # One transaction: an archive that breaks half-way leaves the database as it was.
    head -c "$(($(stat -c %s "$pb") - 30))" "$pb" >"$pgdir/truncated.dump"
    pg "$dst" 'INSERT INTO a(b) VALUES (-1);' >/dev/null
    expect_status "pg: restore of a truncated archive fails" 5 \
        env DATABASE_URL="$(pg_url "$dst")" SECRETS_KEY_FILE="$key_to" "$restore" --force "$pgdir/truncated.dump"
    check "pg: the failed restore was rolled back" test "$(pg_rows "$dst")" -eq 104

    expect_status "pg: restore refuses a SQLite backup" 2 \
        env DATABASE_URL="$(pg_url "$dst")" SECRETS_KEY_FILE="$key_to" "$restore" --force "$kb"
    expect_status "pg: restore refuses a .dump into SQLite" 2 \
        env DATABASE_URL="sqlite://$pgdir/restored/cp.db" "$restore" "$pb"
    printf 'garbage' >"$pgdir/garbage.dump"
    expect_status "pg: restore refuses a file that is not an archive" 5 \
        env DATABASE_URL="$(pg_url "$dst")" "$restore" --force "$pgdir/garbage.dump"
    expect_status "pg: restore reports a missing backup" 4 \
        env DATABASE_URL="$(pg_url "$dst")" "$restore" "$pgdir/none.dump"
    expect_status "pg: restore into a database that does not exist" 2 \
        env DATABASE_URL="$(pg_url "${dst}_absent")" SECRETS_KEY_FILE="$key_to" "$restore" "$pb"
    expect_status "pg: restore of a key needs SECRETS_KEY_FILE" 2 \
        env DATABASE_URL="$(pg_url "$dst")" "$restore" --force "$pb"
    expect_status "pg: restore with a wrong password fails" 5 \
        env DATABASE_URL="$(pg_url "$dst" "$wrong")" SECRETS_KEY_FILE="$key_to" "$restore" --force "$pb"
    check "pg: the refused password is in no log line" test "$(grep -cF -- "$wrong" "$work/stderr")" -eq 0
    expect_status "pg: restore names the package of a missing pg_restore" 3 \
        env PATH="$pgdir/nopg" DATABASE_URL="$(pg_url "$dst")" "$BASH" "$restore" "$pb"
    expect_status "pg: restore refuses while the control plane is active" 6 \
        env PATH="$work/fakebin:$PATH" DATABASE_URL="$(pg_url "$dst")" SECRETS_KEY_FILE="$key_to" "$restore" "$pb"
}

if [[ -n ${CCP_TEST_POSTGRES:-} ]]; then
    postgres_cases
elif [[ ${CCP_REQUIRE_POSTGRES:-} == 1 ]]; then
    fail "PostgreSQL cases: CCP_TEST_POSTGRES is not set, and CCP_REQUIRE_POSTGRES=1"
else
    printf 'skip  PostgreSQL cases: set CCP_TEST_POSTGRES to the URL of a role that may create databases\n'
fi

printf 'backup-restore: %d passed, %d failed\n' "$passes" "$failures"
[[ $failures -eq 0 ]]
