# Shortcuts for the commands CI runs; each one goes through tests/run.sh so the two never drift apart.
# `just --list` shows them.

set positional-arguments := true

# Everything CI runs, in CI's order.
ci:
    tests/run.sh

# Reformat the workspace (CI only checks: `just lint`).
fmt:
    cargo fmt --all

# rustfmt check, clippy with warnings as errors, bash -n and shellcheck on the scripts.
lint:
    tests/run.sh fmt clippy shell

# Build the binaries and run every test; arguments go to the test runner.
test *args:
    TEST_ARGS="$*" tests/run.sh build test

# Build and start the control plane in the foreground with state in ./.local; arguments go to it.
start *args:
    deploy/scripts/quickstart.sh "$@"

# Back up the database now (BACKUP_DIR, RETENTION_DAYS and DATABASE_URL as for deploy/scripts/backup.sh).
backup:
    deploy/scripts/backup.sh
