#!/bin/bash
# Interleaved before/after runs of one `axon bench` scenario: A B A B ... (the machine is
# shared, so conditions drift; interleaving spreads the drift over both sides). The same
# benchmark client (binary B) spawns relay A, then relay B, each round.
#
# usage: benches/scripts/ab.sh ROUNDS AXON_A AXON_B bench-args...
# e.g.:  benches/scripts/ab.sh 3 /tmp/axon-base target/release/axon ingest --connections 1
# Prints one line per run: the scenario's summary and the relay/benchmark CPU line.
set -u
ROUNDS=$1; A=$2; B=$3; shift 3
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    relay=$A; [ "$side" = B ] && relay=$B
    out=$("$B" bench "$@" --spawn --relay-bin "$relay" 2>&1)
    # With --runs N the last summary is the median of the N runs.
    summary=$(grep -E '^(median of [0-9]+ runs: )?(ingest|fanout|query):' <<<"$out" | tail -n 1)
    cpu=$(grep -i 'CPU over' <<<"$out" | head -n 1 | sed 's/^ *//')
    echo "round $round $side | $summary | $cpu"
  done
done
