#!/usr/bin/env bash
# Drives deploy/scripts/backup.sh and restore.sh against a real SQLite file in a scratch directory:
# online copies, naming, retention, exit codes and the refusals.

set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
backup=$repo/deploy/scripts/backup.sh
restore=$repo/deploy/scripts/restore.sh

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
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

printf 'backup-restore: %d passed, %d failed\n' "$passes" "$failures"
[[ $failures -eq 0 ]]
