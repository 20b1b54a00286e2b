#!/usr/bin/env bash
# Builds the host image with images/build.sh and drives a container of it with the capability set the
# control plane uses: SSH by key and by password, sudo, noVNC over websockify, the VNC server kept on
# loopback, the desktop started by the first connection, stopped when idle and back after a crash,
# live password rotation with host-apply-secrets, restart and a prompt `docker stop`.
# Talks only to the containers and the internal network it creates; removes them on exit.
# shellcheck disable=SC2317 # helpers run through check, eventually and trap look unreachable to it

set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
readonly LABEL=io.cloud-cli-proxy.test=host-image
# The capability set of a host container (images/README.md explains each one).
readonly CAPS=(--cap-drop ALL --cap-add CHOWN --cap-add SETUID --cap-add SETGID --cap-add SYS_CHROOT
    --cap-add AUDIT_WRITE --cap-add KILL)

for tool in docker openssl ssh ssh-keygen sshpass curl timeout; do
    command -v "$tool" >/dev/null || {
        printf 'host-image.sh: %s is missing (apt-get install -y docker.io openssh-client openssl sshpass curl)\n' "$tool" >&2
        exit 2
    }
done

# Nothing below reads the terminal; ssh would otherwise forward it to the remote commands.
exec </dev/null
work=$(mktemp -d)
tag=$$-$RANDOM
network=cloud-cli-proxy-test-host-$tag
# Everything this run creates also carries RUN_LABEL, so cleanup finds it even when `docker run`
# timed out after creating the container.
readonly RUN_LABEL=io.cloud-cli-proxy.test-run=$tag
network_created=0
cleanup() {
    local ids
    ids=$(timeout 30 docker ps -aq --filter "label=$RUN_LABEL" 2>/dev/null) || ids=
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086 # one id per word
        timeout 60 docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
    if ((network_created)); then
        timeout 60 docker network rm "$network" >/dev/null 2>&1 || true
    fi
    rm -rf -- "$work"
}
trap cleanup EXIT

passes=0 failures=0
pass() {
    printf 'ok    %s\n' "$1"
    passes=$((passes + 1))
}
fail() {
    printf 'FAIL  %s\n' "$1"
    failures=$((failures + 1))
}
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
not() { ! "$@"; }
# eventually SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
finish() {
    if ((failures)) && [[ -n ${container:-} ]]; then
        echo "--- last ssh errors"
        tail -n 20 "$work/ssh.log" 2>/dev/null | sed 's/^/      /'
        echo "--- docker logs $container"
        timeout 30 docker logs --tail 40 "$container" 2>&1 | sed 's/^/      /'
    fi
    printf '%d passed, %d failed\n' "$passes" "$failures"
    ((failures == 0)) || exit 1
    exit 0
}
dock() { timeout --kill-after=5 60 docker "$@"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# --- build ----------------------------------------------------------------------------------------

start=$(date +%s%N)
if image=$("$repo/images/build.sh" host 2>"$work/build.log" | tail -n 1) && [[ -n $image ]]; then
    sed 's/^/      /' "$work/build.log"
    pass "images/build.sh gives $image ($(($(ms_since "$start") / 1000)) s)"
else
    fail "images/build.sh failed"
    sed 's/^/      /' "$work/build.log"
    finish
fi
start=$(date +%s%N)
again=$("$repo/images/build.sh" host 2>"$work/build2.log" | tail -n 1) || again=
elapsed=$(ms_since "$start")
printf '      second build.sh: %d.%03d s\n' $((elapsed / 1000)) $((elapsed % 1000))
check "second build prints the same reference" test "$again" = "$image"
check "second build is fast ($elapsed ms)" test "$elapsed" -lt 10000
check "second build says it is up to date" grep -q 'is up to date' "$work/build2.log"
check "image carries the managed labels" test \
    "$(dock image inspect -f '{{index .Config.Labels "io.cloud-cli-proxy.managed"}} {{index .Config.Labels "io.cloud-cli-proxy.image"}} {{index .Config.Labels "io.cloud-cli-proxy.version"}}' "$image")" \
    = "true host ${image##*:}"

# --- secrets ----------------------------------------------------------------------------------------

secrets=$work/secrets
mkdir -m 0700 "$secrets"
password=$(openssl rand -hex 12)
vnc_password=$(openssl rand -hex 4)
openssl passwd -6 -stdin <<<"$password" >"$secrets/password.hash"
ssh-keygen -q -t ed25519 -N '' -C host-image-test -f "$work/key"
cp "$work/key.pub" "$secrets/authorized_keys"
check "the image has no SSH host keys of its own" test -z "$(dock run --rm --network none --label "$LABEL" \
    --label "$RUN_LABEL" --entrypoint sh "$image" -c 'ls /etc/ssh/ssh_host_* /etc/ssh/host-keys 2>/dev/null')"
dock run --rm -i --network none --label "$LABEL" --label "$RUN_LABEL" --entrypoint vncpasswd "$image" -f \
    <<<"$vnc_password" >"$secrets/vnc.passwd"
chmod 0600 "$secrets"/*

dock network create --internal --label "$LABEL" --label "$RUN_LABEL" "$network" >/dev/null
network_created=1

# run_host NAME [docker run options...]: starts a host container on the test network and sets
# $container and $ip. The secrets directory is mounted, not the files, so that renamed files show.
run_host() {
    local name=$1
    shift
    container=$(dock run -d --name "cloud-cli-proxy-test-$name-$tag" --label "$LABEL" --label "$RUN_LABEL" \
        --network "$network" \
        --hostname "$name" "${CAPS[@]}" --log-opt max-size=1m \
        -e HOST_USER=user -v "$secrets:/run/cloud-cli-proxy:ro" "$@" "$image")
    container_ip
}
container_ip() { ip=$(dock inspect -f "{{(index .NetworkSettings.Networks \"$network\").IPAddress}}" "$container"); }
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5)
ssh_key() { ssh "${ssh_opts[@]}" -o BatchMode=yes -o IdentitiesOnly=yes -i "$work/key" "user@$ip" "$@" 2>>"$work/ssh.log"; }
ssh_password() {
    SSHPASS=$1 sshpass -e ssh "${ssh_opts[@]}" -o PubkeyAuthentication=no \
        -o PreferredAuthentications=password "user@$ip" "${@:2}" 2>>"$work/ssh.log"
}
host_key() { ssh-keyscan -t ed25519 "$ip" 2>/dev/null | cut -d' ' -f3; }
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1"; }
novnc_ok() { test "$(http_code "http://$ip:6080/vnc.html")" = 200; }
# Not grep -q: it would stop reading early, and docker logs's SIGPIPE would fail the pipeline.
logs_show() { timeout 30 docker logs "$container" 2>&1 | grep -- "$1" >/dev/null; }
# shellcheck disable=SC2016 # $1 and $2 are the inner bash's arguments
port_closed() { ! timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }
runs() { dock exec "$container" pgrep -x "$1" >/dev/null; }

# --- the host container ---------------------------------------------------------------------------------

start=$(date +%s%N)
run_host host
if eventually 30 ssh_key true; then
    pass "sshd answers a key login on $ip:22 ($(ms_since "$start") ms after docker run)"
else
    fail "sshd answers a key login on $ip:22"
    dock logs "$container" 2>&1 | tail -n 30 | sed 's/^/      /'
    finish
fi
check "the session runs as the user with a home" test "$(ssh_key 'id -un; cd && pwd')" = "$(printf 'user\n/home/user')"
check "password login works" ssh_password "$password" true
check "a wrong password is refused" not ssh_password "wrong-$password" true
check "sudo -S works with the password" test "$(ssh_key "sudo -S -p '' id -u" <<<"$password")" = 0
check "sudo refuses a wrong password" not ssh_key "sudo -S -p '' true" <<<"wrong-$password"
check "root login is disabled" dock exec "$container" sh -c 'sshd -T | grep -qx "permitrootlogin no"'
# shellcheck disable=SC2016 # expanded by the remote shell
check "the gateway key is root-owned and read-only to the user" \
    ssh_key 'test "$(stat -c %U:%a /etc/ssh/authorized_keys/user)" = root:644 && ! test -w /etc/ssh/authorized_keys/user'
check "before any connection to 6080 no desktop runs" not runs Xvnc
check "nor websockify" not dock exec "$container" pgrep -f websockify
check "noVNC: GET /vnc.html on 6080 is 200 (the first connection starts the desktop)" eventually 30 novnc_ok
check "the VNC server answers RFB on 127.0.0.1:5901 inside the container" \
    dock exec "$container" timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5901 && head -c 12 <&3 | grep -q "^RFB 003.008"'
check "the VNC server offers only VncAuth" test "$(dock exec -i "$container" timeout 5 python3 - <<'EOF'
import socket
s = socket.create_connection(("127.0.0.1", 5901), timeout=3)
s.recv(12)
s.sendall(b"RFB 003.008\n")
n = s.recv(1)[0]
print(list(s.recv(n)))
EOF
)" = "[2]"
check "VNC port 5901 is not reachable from outside the container" port_closed "$ip" 5901
check "X display port 6001 is not reachable from outside the container" port_closed "$ip" 6001
check "the desktop session runs as the user" eventually 15 dock exec "$container" pgrep -u user -x openbox
check "no desktop service had to be restarted" not logs_show 'exited (status'
check "docker logs shows host-init" logs_show 'sshd is listening on port 22'
check "websockify and Xvnc listen on loopback only" test \
    "$(dock exec "$container" ss -Hltn '( sport = :5801 or sport = :5901 )' | awk '{print $4}' | sort | tr '\n' ' ')" \
    = "127.0.0.1:5801 127.0.0.1:5901 "
check "websockify's port 5801 is not reachable from outside the container" port_closed "$ip" 5801
check "a desktop whose Xvnc was killed" dock exec "$container" pkill -KILL -x Xvnc
check "comes back on the next open" eventually 30 novnc_ok
check "with its VNC server answering" eventually 15 dock exec "$container" timeout 5 bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/5901 && head -c 12 <&3 | grep -q "^RFB 003.008"'

# Rotation: rewrite the file the way the control plane does (a new file renamed over the old one),
# then docker exec host-apply-secrets; no restart.
started_at=$(dock inspect -f '{{.State.StartedAt}}' "$container")
new_password=$(openssl rand -hex 12)
openssl passwd -6 -stdin <<<"$new_password" >"$secrets/password.hash.new"
chmod 0600 "$secrets/password.hash.new"
mv -f "$secrets/password.hash.new" "$secrets/password.hash"
check "host-apply-secrets applies the new files" dock exec "$container" host-apply-secrets 2>>"$work/ssh.log"
check "the new password logs in" ssh_password "$new_password" true
check "the old password is refused" not ssh_password "$password" true
check "sudo takes the new password" test "$(ssh_key "sudo -S -k -p '' id -u" <<<"$new_password")" = 0
check "the container was not restarted" test "$(dock inspect -f '{{.State.StartedAt}}' "$container")" = "$started_at"
printf 'not a hash\n' >"$secrets/password.hash.new"
mv -f "$secrets/password.hash.new" "$secrets/password.hash"
check "host-apply-secrets rejects a malformed hash" not dock exec "$container" host-apply-secrets 2>>"$work/ssh.log"
check "and the previous password keeps working" ssh_password "$new_password" true
openssl passwd -6 -stdin <<<"$new_password" >"$secrets/password.hash"

first_host_key=$(host_key)
start=$(date +%s%N)
dock stop -t 10 "$container" >/dev/null
stop_ms=$(ms_since "$start")
check "docker stop takes under 10 s ($stop_ms ms)" test "$stop_ms" -lt 10000
check "host-init exits 0 on SIGTERM" test "$(dock inspect -f '{{.State.ExitCode}}' "$container")" = 0
dock start "$container" >/dev/null
container_ip
check "after a restart sshd answers again" eventually 30 ssh_key true
check "the SSH host key survives the restart" test "$(host_key)" = "$first_host_key"
check "after a restart noVNC answers again" eventually 30 novnc_ok

# --- a second host: a home volume with files in it, and no-new-privileges ---------------------------------

# The home is someone else's with a file deep inside: host-init must not chown (or walk) any of it.
mkdir -p "$work/home/projects/deep"
touch "$work/home/projects/deep/file"
chown -R 4242:4242 "$work/home"
run_host second --security-opt no-new-privileges -v "$work/home:/home/user" -e DESKTOP_IDLE_SECS=10
check "with no-new-privileges sshd still answers" eventually 30 ssh_key true
check "each container has its own SSH host key" test "$(host_key)" != "$first_host_key"
check "noVNC answers (starting the desktop)" eventually 30 novnc_ok
check "the desktop starts with a home the user cannot write" eventually 15 dock exec "$container" pgrep -u user -x openbox
check "and without restarts" not logs_show 'exited (status'
check "without a VNC session it stops after DESKTOP_IDLE_SECS (10 s here)" eventually 60 not runs Xvnc
check "taking the session along" not dock exec "$container" pgrep -u user -x openbox
check "while sshd keeps answering" ssh_key true
check "and the next open starts it again" eventually 30 novnc_ok
check "a mounted home keeps its owners" test "$(stat -c %u "$work/home" "$work/home/projects/deep/file" | sort -u)" = 4242
check "with no-new-privileges sudo is refused" not ssh_key "sudo -S -p '' true" <<<"$new_password"

finish
