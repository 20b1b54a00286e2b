#!/usr/bin/env bash
# cloud-cli-proxy access: signs you in, starts your host when it is stopped, and opens SSH to it.
#
#   curl -sSf http://SERVER:8080/v1/bootstrap/script | bash   asks for username and password
#   curl -sSf http://SERVER/entry/SHORTID | bash               asks for the password of that host's owner
#
# Over https://, curl verifies the server's certificate; for a private CA, export CURL_CA_BUNDLE=CA.pem
# before running the line above (both curl calls use it).
#
# Answers are read from the terminal (/dev/tty), so piping into bash works. The SSH secret the
# server hands out is single-use and expires within minutes; it reaches ssh through sshpass (in the
# SSHPASS environment variable) or an SSH_ASKPASS helper, never on a command line.
#
# Exit status: the exit status of ssh (of your session, or 255 when ssh itself failed), except:
#   10  wrong username or password (the server does not say which)
#   11  the account is disabled
#   12  the account has expired
#   13  the account has no host (or it is being deleted)
#   14  the host could not be started
#   15  the server cannot be reached
#   16  too many attempts: wait and try again
#   17  no terminal to ask on, or no answer
#   18  unexpected answer from the server, or a tool is missing
set -euo pipefail

# The server fills in the next line; nothing else in this script comes from the server's data.
# @@SETTINGS@@

readonly EXIT_WRONG_PASSWORD=10 EXIT_DISABLED=11 EXIT_EXPIRED=12 EXIT_NO_HOST=13
readonly EXIT_START_FAILED=14 EXIT_UNREACHABLE=15 EXIT_RATE_LIMITED=16 EXIT_NO_TERMINAL=17
readonly EXIT_PROTOCOL=18
# How long to wait for the host to start.
readonly START_LIMIT_SECS=900

die() {
    local code=$1
    shift
    printf 'error: %s\n' "$*" >&2
    exit "$code"
}

# A JSON string literal of $1: quotes, backslashes and control characters escaped.
json_string() {
    local LC_ALL=C
    local s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        '"') out+='\"' ;;
        \\) out+="\\\\" ;;
        [[:cntrl:]]) printf -v c '\\u%04x' "'$c" && out+=$c ;;
        *) out+=$c ;;
        esac
    done
    printf '"%s"' "$out"
}

# The value of the top-level field $2 of the flat JSON object $1: strings unescaped (\uXXXX
# becomes ?), numbers and booleans as written, null and missing fields empty.
json_field() {
    local LC_ALL=C
    local json=$1 key=$2 rest out='' c
    rest=${json#*\""$key"\":}
    [[ $rest != "$json" ]] || return 0
    if [[ $rest == \"* ]]; then
        rest=${rest:1}
        while [[ -n $rest ]]; do
            c=${rest:0:1}
            if [[ $c == '"' ]]; then
                break
            elif [[ $c == \\ ]]; then
                c=${rest:1:1}
                case $c in
                n) out+=$'\n' ;;
                t) out+=$'\t' ;;
                r | b | f) ;;
                u)
                    out+='?'
                    rest=${rest:4}
                    ;;
                *) out+=$c ;;
                esac
                rest=${rest:2}
            else
                out+=$c
                rest=${rest:1}
            fi
        done
    else
        out=${rest%%[,\}]*}
        [[ $out != null ]] || out=''
    fi
    printf '%s' "$out"
}

# request METHOD PATH [STDIN] [CURL ARGS...]: sets STATUS and BODY. STDIN (the JSON body, or a
# header line for `-H @-`) goes to curl on its standard input, so no secret is ever an argument.
STATUS='' BODY=''
request() {
    local method=$1 path=$2 input=${3-} out rc=0
    shift 3 || shift $#
    out=$(printf '%s' "$input" | curl -sS --connect-timeout 10 --max-time 60 -X "$method" \
        -H 'Accept: application/json' -w '\n%{http_code}' "$@" -- "$CCP_URL$path") || rc=$?
    if ((rc != 0)); then
        die "$EXIT_UNREACHABLE" "cannot reach the server at $CCP_URL (curl exit status $rc)"
    fi
    STATUS=${out##*$'\n'}
    BODY=${out%$'\n'*}
}

# Turns a refusal of the server into its exit status and one line.
refused() {
    local code
    code=$(json_field "$BODY" code)
    case $code in
    unauthorized) die "$EXIT_WRONG_PASSWORD" "wrong username or password" ;;
    account_disabled) die "$EXIT_DISABLED" "this account is disabled; ask your operator" ;;
    account_expired) die "$EXIT_EXPIRED" "this account has expired; ask your operator" ;;
    no_host | host_deleting) die "$EXIT_NO_HOST" "this account has no host; ask your operator" ;;
    start_failed) die "$EXIT_START_FAILED" "your host could not be started; ask your operator" ;;
    rate_limited) die "$EXIT_RATE_LIMITED" "too many attempts; wait a few minutes and try again" ;;
    *) die "$EXIT_PROTOCOL" "unexpected answer from the server (HTTP $STATUS ${code:-without an error code})" ;;
    esac
}

# Waits until the session's task has brought the host up, showing its progress.
wait_ready() {
    local id=$1 status progress stage line shown='' deadline=$((SECONDS + START_LIMIT_SECS))
    while :; do
        request GET "/v1/bootstrap/tasks/$id"
        [[ $STATUS == 200 ]] || refused
        status=$(json_field "$BODY" status)
        progress=$(json_field "$BODY" progress)
        stage=$(json_field "$BODY" stage)
        stage=${stage//[[:cntrl:]]/?}
        case $status in
        succeeded) return 0 ;;
        failed) die "$EXIT_START_FAILED" "your host could not be started (${stage:-failed}); ask your operator" ;;
        queued | running) ;;
        *) die "$EXIT_PROTOCOL" "unexpected task status from the server: ${status:-none}" ;;
        esac
        [[ $progress =~ ^[0-9]{1,3}$ ]] || progress=0
        line=$(printf 'starting your host: %3d%% %s' "$progress" "$stage")
        if [[ $line != "$shown" ]]; then
            printf '%s\n' "$line" >&2
            shown=$line
        fi
        if ((SECONDS >= deadline)); then
            die "$EXIT_START_FAILED" "your host did not start within $((START_LIMIT_SECS / 60)) minutes"
        fi
        sleep 1
    done
}

# The askpass helper, removed on exit; global because the EXIT trap runs outside `connect`.
ASKPASS_FILE=''
# shellcheck disable=SC2317 # called by the EXIT trap
remove_askpass() {
    if [[ -n $ASKPASS_FILE ]]; then
        rm -f -- "$ASKPASS_FILE"
    fi
}

# connect HOST PORT USER SECRET: runs ssh on the terminal and returns its exit status.
connect() {
    local host=$1 port=$2 user=$3 secret=$4 rc=0
    [[ $host =~ ^[A-Za-z0-9][A-Za-z0-9.:-]*$ ]] || die "$EXIT_PROTOCOL" "the server sent a bad SSH host"
    [[ $port =~ ^[0-9]{1,5}$ ]] || die "$EXIT_PROTOCOL" "the server sent a bad SSH port"
    [[ $user =~ ^[A-Za-z0-9][A-Za-z0-9._-]*\+[a-z0-9]+$ ]] || die "$EXIT_PROTOCOL" "the server sent a bad SSH user"
    [[ -n $secret ]] || die "$EXIT_PROTOCOL" "the server sent no SSH secret"
    command -v ssh >/dev/null 2>&1 || die "$EXIT_PROTOCOL" "ssh is not installed (the OpenSSH client)"
    local opts=(-t -p "$port" -l "$user" -o PubkeyAuthentication=no -o PreferredAuthentications=password
        -o NumberOfPasswordPrompts=1 -o StrictHostKeyChecking=accept-new -o ConnectTimeout=20)
    printf 'connecting to %s@%s port %s\n' "$user" "$host" "$port" >&2
    if command -v sshpass >/dev/null 2>&1; then
        SSHPASS=$secret sshpass -e ssh "${opts[@]}" -- "$host" <&3 || rc=$?
    else
        # The helper holds no secret: ssh hands it its own environment, where the secret is.
        trap remove_askpass EXIT
        ASKPASS_FILE=$(mktemp "${TMPDIR:-/tmp}/ccp-askpass.XXXXXX")
        # shellcheck disable=SC2016 # the helper expands the variable, not this script
        printf '#!/bin/sh\nprintf "%%s\\n" "$CCP_SSH_SECRET"\n' >"$ASKPASS_FILE"
        chmod 700 "$ASKPASS_FILE"
        CCP_SSH_SECRET=$secret SSH_ASKPASS=$ASKPASS_FILE SSH_ASKPASS_REQUIRE=force \
            ssh "${opts[@]}" -- "$host" <&3 || rc=$?
    fi
    return "$rc"
}

main() {
    local username='' password='' body task_id session_secret secret='' host port user rc=0
    command -v curl >/dev/null 2>&1 || die "$EXIT_PROTOCOL" "curl is not installed"
    # Standard input is this script when it is piped into bash: answers come from the terminal.
    { exec 3</dev/tty; } 2>/dev/null || die "$EXIT_NO_TERMINAL" "no terminal to ask for the password on"
    if [[ -z $CCP_SHORT_ID ]]; then
        IFS= read -r -u 3 -p 'Username: ' username || die "$EXIT_NO_TERMINAL" "no username given"
        [[ -n $username ]] || die "$EXIT_NO_TERMINAL" "no username given"
    fi
    IFS= read -r -s -u 3 -p 'Password: ' password || die "$EXIT_NO_TERMINAL" "no password given"
    printf '\n' >&2
    [[ -n $password ]] || die "$EXIT_NO_TERMINAL" "no password given"

    if [[ -z $CCP_SHORT_ID ]]; then
        body="{\"username\":$(json_string "$username"),\"password\":$(json_string "$password")}"
        request POST /v1/bootstrap/sessions "$body" -H 'Content-Type: application/json' --data-binary @-
    else
        body="{\"password\":$(json_string "$password")}"
        request POST "/v1/entry/$CCP_SHORT_ID/auth" "$body" -H 'Content-Type: application/json' --data-binary @-
    fi
    password='' body=''
    [[ $STATUS == 200 || $STATUS == 201 ]] || refused
    task_id=$(json_field "$BODY" task_id)
    session_secret=$(json_field "$BODY" session_secret)
    secret=$(json_field "$BODY" ssh_pass)
    host=$(json_field "$BODY" ssh_host)
    port=$(json_field "$BODY" ssh_port)
    user=$(json_field "$BODY" ssh_user)
    [[ $task_id =~ ^[0-9a-f-]{36}$ ]] || die "$EXIT_PROTOCOL" "the server sent no task id"

    wait_ready "$task_id"
    if [[ -z $secret ]]; then
        request GET "/v1/bootstrap/tasks/$task_id/handoff" "X-Bootstrap-Secret: $session_secret" -H @-
        [[ $STATUS == 200 ]] || refused
        host=$(json_field "$BODY" host)
        port=$(json_field "$BODY" port)
        user=$(json_field "$BODY" user)
        secret=$(json_field "$BODY" password)
    fi
    connect "$host" "$port" "$user" "$secret" || rc=$?
    exit "$rc"
}

main "$@"
