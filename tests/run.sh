#!/usr/bin/env bash
# The project's test command: what CI runs (through .ci/run) and what the README asks you to run.
#
# Usage:  tests/run.sh [STEP...]
#
# Steps, run in this order (default: all of them):
#   deps    install missing Debian packages the checks and tests use (apt-get update only if needed),
#           the Docker engine when none runs, sing-box (deploy/scripts/install-sing-box.sh), and
#           schemathesis from PyPI into the venv tests/.venv (tests/schemathesis-requirements.txt;
#           skipped when the venv already holds exactly those pins)
#   fmt     cargo fmt --all --check
#   clippy  cargo clippy --workspace --all-targets -- -D warnings
#   build   cargo build --workspace --bins
#   shell   bash -n and shellcheck on every *.sh under deploy/, tests/, images/ and control-plane/web/vendor/, and .ci/run
#   test    the shell tests in tests/scripts/, then cargo nextest run --workspace --no-fail-fast
#           (cargo test --workspace --no-fail-fast when cargo-nextest is not installed), then the API
#           suites again with every control plane on PostgreSQL (Debian's cluster on 127.0.0.1:5432,
#           started here, with a role ccp_test that may create databases)
#
# TEST_ARGS is passed to the Rust test runner, split on whitespace, e.g. TEST_ARGS='-E test(login)'.
#
# A failing step ends the run at once, except `test`, which runs every test and then fails.

set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

readonly ALL_STEPS=(deps fmt clippy build shell test)
# What the checks and tests call, as command:Debian package.
readonly REQUIRED=(sqlite3:sqlite3 shellcheck:shellcheck jq:jq curl:curl cc:build-essential ssh-keygen:openssh-client tmux:tmux
    sshpass:sshpass debootstrap:debootstrap openssl:openssl nft:nftables nsenter:util-linux chromium:chromium
    chromedriver:chromium-driver pg_ctlcluster:postgresql psql:postgresql-client docker-compose:docker-compose
    wireguard-go:wireguard-go wg:wireguard-tools)

header() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'tests/run.sh: %s\n' "$*" >&2
    exit 1
}

step_deps() {
    local entry missing=()
    for entry in "${REQUIRED[@]}"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_install "${missing[@]}"
    else
        echo "all present: ${REQUIRED[*]%%:*}"
    fi
    ensure_docker
    # The egress tests run real sing-box servers and clients.
    deploy/scripts/install-sing-box.sh
    ensure_schemathesis
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
}

# The host and agent tests drive the real Docker engine: start it (installing docker.io if needed).
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "installing the Docker engine (docker.io)"
        apt-get update -q
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io
    fi
    echo "starting the Docker engine"
    if ! { command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null; }; then
        nohup dockerd >/var/log/dockerd.log 2>&1 &
    fi
    local _
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "the Docker engine did not start (see /var/log/dockerd.log)"
}

# The OpenAPI conformance test runs schemathesis from a venv of its own, made from pinned
# requirements. The venv remembers the requirements it was made from; it is rebuilt when they change.
readonly SCHEMATHESIS_VENV=tests/.venv
readonly SCHEMATHESIS_REQUIREMENTS=tests/schemathesis-requirements.txt
ensure_schemathesis() {
    local stamp=$SCHEMATHESIS_VENV/requirements.installed
    if [[ -x $SCHEMATHESIS_VENV/bin/st ]] && cmp -s "$SCHEMATHESIS_REQUIREMENTS" "$stamp"; then
        echo "schemathesis present: $("$SCHEMATHESIS_VENV/bin/st" --version)"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3
    # Debian's python3 makes venvs only with python3-venv (ensurepip).
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_install python3-venv
    echo "installing schemathesis into $SCHEMATHESIS_VENV"
    rm -rf "$SCHEMATHESIS_VENV"
    python3 -m venv "$SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --requirement "$SCHEMATHESIS_REQUIREMENTS"
    cp "$SCHEMATHESIS_REQUIREMENTS" "$stamp"
    echo "installed: $("$SCHEMATHESIS_VENV/bin/st" --version)"
}

apt_install() {
    local as_root=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing $*: as root, run apt-get install -y $*"
        as_root=(sudo)
    fi
    echo "installing $*"
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# The PostgreSQL runs of the API suites use Debian's cluster: start it (creating it if the package
# made none) and make sure the test role exists. Exports CCP_TEST_POSTGRES.
readonly TEST_POSTGRES_URL=postgres://ccp_test:ccp_test@127.0.0.1:5432/postgres
ensure_postgres() {
    local version cluster
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n 1)
    [[ -n $version ]] || die "PostgreSQL is not installed (tests/run.sh deps installs it)"
    cluster=$(pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v { print $2; exit }')
    if [[ -z $cluster ]]; then
        echo "creating the PostgreSQL $version cluster"
        pg_createcluster "$version" main >/dev/null
        cluster=main
    fi
    if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c { print $4 }' | grep -qx online; then
        echo "starting PostgreSQL $version/$cluster"
        pg_ctlcluster "$version" "$cluster" start
    fi
    local _
    for _ in $(seq 1 30); do
        su postgres -c "psql -qAtc 'SELECT 1'" >/dev/null 2>&1 && break
        sleep 1
    done
    su postgres -c "psql -qv ON_ERROR_STOP=1" <<'SQL' >/dev/null || die "cannot create the PostgreSQL test role"
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ccp_test') THEN
        CREATE ROLE ccp_test LOGIN CREATEDB PASSWORD 'ccp_test';
    END IF;
END $$;
SQL
    psql -qAt "$TEST_POSTGRES_URL" -c 'SELECT 1' >/dev/null || die "cannot sign in to PostgreSQL as ccp_test"
    export CCP_TEST_POSTGRES=$TEST_POSTGRES_URL
}

# The suites that run a second time with every control plane on PostgreSQL.
readonly POSTGRES_SUITES=(seed_api authz_matrix bad_input restart_backup concurrent_writes cli openapi_conformance metrics recording traffic)

step_fmt() {
    cargo fmt --all --check
}

step_clippy() {
    cargo clippy --workspace --all-targets -- -D warnings
}

step_build() {
    cargo build --workspace --bins
}

step_shell() {
    local scripts=() script
    mapfile -d '' -t scripts < <(find deploy tests images control-plane/web/vendor -type f -name '*.sh' -print0 | sort -z)
    scripts+=(.ci/run)
    for script in "${scripts[@]}"; do
        bash -n "$script"
    done
    shellcheck "${scripts[@]}"
    echo "${#scripts[@]} scripts pass bash -n and shellcheck"
}

step_test() {
    local args=() failed=0 script
    read -r -a args <<<"${TEST_ARGS:-}"
    # deps installed sing-box and Docker, and CI runs as root: the egress suites and the agent's
    # Docker and namespace tests must run, never skip. Likewise schemathesis, which deps installed
    # into tests/.venv.
    export CCP_REQUIRE_SING_BOX=1 CCP_REQUIRE_NETNS=1 CCP_REQUIRE_BROWSER=1 CCP_REQUIRE_SCHEMATHESIS=1
    export CCP_REQUIRE_DOCKER=1
    ensure_postgres
    export CCP_REQUIRE_POSTGRES=1
    for script in tests/scripts/*.sh; do
        [[ -e $script ]] || continue
        echo "--- $script"
        bash "$script" || failed=1
    done
    local suites=() suite
    for suite in "${POSTGRES_SUITES[@]}"; do
        suites+=(--test "$suite")
    done
    # The Rust runner goes last so that its summary closes the output.
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast "${args[@]}" || failed=1
        echo "--- the API suites on PostgreSQL: ${POSTGRES_SUITES[*]}"
        CCP_E2E_DATABASE=postgres cargo nextest run -p cloud-cli-proxy-tests --no-fail-fast "${suites[@]}" "${args[@]}" || failed=1
    else
        cargo test --workspace --no-fail-fast "${args[@]}" || failed=1
        CCP_E2E_DATABASE=postgres cargo test -p cloud-cli-proxy-tests --no-fail-fast "${suites[@]}" "${args[@]}" || failed=1
    fi
    return "$failed"
}

current_step=""
report_failure() {
    local status=$?
    if [[ $status -ne 0 && -n $current_step ]]; then
        header "FAILED: $current_step (exit status $status)"
    fi
}

main() {
    local steps=("$@") step
    [[ ${#steps[@]} -gt 0 ]] || steps=("${ALL_STEPS[@]}")
    for step in "${steps[@]}"; do
        [[ " ${ALL_STEPS[*]} " == *" $step "* ]] || die "unknown step '$step' (steps: ${ALL_STEPS[*]})"
    done

    # Steps are called plainly, never in a condition, so that `set -e` stops them at their first failure.
    trap report_failure EXIT
    local started=$SECONDS
    for step in "${steps[@]}"; do
        current_step=$step
        header "$step"
        "step_$step"
    done
    current_step=""
    header "passed: ${steps[*]} ($((SECONDS - started))s)"
}

main "$@"
