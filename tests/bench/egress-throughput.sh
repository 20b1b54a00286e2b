#!/usr/bin/env bash
# Egress throughput (root; iperf3, sing-box, iproute2): iperf3 between two network namespaces in
# 198.18.0.0/15, directly over their veth, then through the egress runtime with WireGuard
# (boringtun in cloud-cli-proxy-egress -> cloud-cli-proxy-fake-wg, the same batched data path as a
# responder) and with shadowsocks (sing-box tun + outbound -> sing-box inbound). Upload ("up") and
# download ("down", iperf3 -R). The bench program's `egress` measures the same paths with hosts,
# CPU per GiB and leaks; this script is the quick loop for the data paths alone.
#
#   cargo build --release -p agent --bin cloud-cli-proxy-egress -p cloud-cli-proxy-tests --bin cloud-cli-proxy-fake-wg
#   BIN=target/release/cloud-cli-proxy-egress FAKE_WG=target/release/cloud-cli-proxy-fake-wg T=5 tests/bench/egress-throughput.sh
#
# Everything lives in the namespaces ccpt-bench-c/-s, deleted on exit.
set -euo pipefail

BIN=${BIN:-target/release/cloud-cli-proxy-egress}
FAKE_WG=${FAKE_WG:-target/release/cloud-cli-proxy-fake-wg}
T=${T:-5}
C=ccpt-bench-c
S=ccpt-bench-s
D=$(mktemp -d)
SB=""

cleanup() {
    local ns pid
    for ns in "$C" "$S"; do
        # Only what this script started runs in its namespaces.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$D"
}
trap cleanup EXIT
for ns in "$C" "$S"; do ip netns del "$ns" 2>/dev/null || true; done

ip netns add "$C"
ip netns add "$S"
ip link add c0 netns "$C" type veth peer name s0 netns "$S"
ip -n "$C" link set lo up
ip -n "$S" link set lo up
ip -n "$C" addr add 198.18.10.2/24 dev c0
ip -n "$C" link set c0 up
ip -n "$S" addr add 198.18.10.1/24 dev s0
ip -n "$S" link set s0 up
ip -n "$S" addr add 198.18.20.1/32 dev lo
ip -n "$C" route add default via 198.18.10.1
ip netns exec "$S" iperf3 -s -B 198.18.20.1 -D
sleep 0.5

mbits() {
    ip netns exec "$C" iperf3 -c 198.18.20.1 -t "$T" -J "$@" |
        python3 -c 'import json,sys; d=json.load(sys.stdin)["end"]; print("%.0f Mbit/s" % (d["sum_received"]["bits_per_second"]/1e6))'
}
key() { awk -v f="$2:" '$1==f {print $2}' <<<"$1"; }
# Runs `$2...` every 0.1 s until it succeeds, at most `$1` times; fails if it never did.
retry() {
    local n=$1 _
    shift
    for _ in $(seq 1 "$n"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
wait_up() {
    retry 100 grep -qs '"state": "up"' "$D/egress/status.json" || { cat "$D/egress/status.json"; exit 1; }
}
# Waits until the fake WireGuard server answered `$1` on its stdout (one line per command).
wg_answered() {
    retry 50 grep -qxs "$1" "$D/wg-out" || {
        echo "fake WireGuard server did not answer $1:" >&2
        cat "$D/wg-server.log" >&2
        exit 1
    }
}
# sing-box's shadowsocks server, retried if it is not listening after 1.5 s.
start_server() {
    local _
    for _ in 1 2 3 4 5 6; do
        ip netns exec "$S" sing-box run -c "$1" >"$D/server.log" 2>&1 &
        SB=$!
        sleep 1.5
        if [[ -n $(ip netns exec "$S" ss "$3" "sport = :$2") ]]; then return 0; fi
        kill "$SB"
        wait "$SB" 2>/dev/null || true
    done
    echo "sing-box server not listening" >&2
    exit 1
}

echo "direct       up: $(mbits)  down: $(mbits -R)"

SK=$(sing-box generate wg-keypair)
CK=$(sing-box generate wg-keypair)
PW=$(sing-box generate rand --base64 16)
cat >"$D/ss-server.json" <<J
{"log":{"level":"warn"},"inbounds":[{"type":"shadowsocks","listen":"198.18.10.1","listen_port":8388,
 "method":"2022-blake3-aes-128-gcm","password":"$PW"}],
 "outbounds":[{"type":"direct","tag":"direct"}],"route":{"final":"direct"}}
J

mkdir -p "$D/egress"
ip netns exec "$C" "$BIN" run --dir "$D/egress" --sing-box "$(command -v sing-box)" >"$D/runtime.log" 2>&1 &

# The fake server reads its keys on stdin (never on a command line), held open through a FIFO.
mkfifo "$D/wg-in"
ip netns exec "$S" "$FAKE_WG" --listen 198.18.10.1:51820 --tun wgs0 --address 198.19.100.1/24 \
    <"$D/wg-in" >"$D/wg-out" 2>"$D/wg-server.log" &
WG=$!
exec 3>"$D/wg-in"
echo "private-key $(key "$SK" PrivateKey)" >&3
wg_answered ready
echo "peer $(key "$CK" PublicKey) - 198.19.100.2/32" >&3
wg_answered ok
cat >"$D/egress/egress.json" <<J
{"spec":{"egress_ip_id":"bench","declared_ip":"198.18.20.1","dns_server":"198.18.20.1","tunnel":{"type":"wireguard",
 "endpoint":"wg.bench:51820","peer_public_key":"$(key "$SK" PublicKey)","preshared_key":null,
 "private_key":"$(key "$CK" PrivateKey)","allowed_ips":["0.0.0.0/0"],"address":"198.19.100.2/32"}},
 "endpoint_ip":"198.18.10.1"}
J
wait_up
echo "wireguard    up: $(mbits)  down: $(mbits -R)"
exec 3>&-
wait "$WG" 2>/dev/null || true

start_server "$D/ss-server.json" 8388 -Hltn
cat >"$D/egress/egress.json" <<J
{"spec":{"egress_ip_id":"bench","declared_ip":"198.18.20.1","dns_server":"198.18.20.1","tunnel":{"type":"proxy",
 "outbound":{"type":"shadowsocks","server":"ss.bench","server_port":8388,"method":"2022-blake3-aes-128-gcm",
 "password":"$PW"}}},"endpoint_ip":"198.18.10.1"}
J
sleep 0.5
wait_up
echo "shadowsocks  up: $(mbits)  down: $(mbits -R)"
