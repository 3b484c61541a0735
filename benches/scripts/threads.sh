#!/bin/sh
# The relay's CPU per event by thread (utime+stime from /proc/PID/task/*/stat), the bytes
# it made the kernel write per event (/proc/PID/io), and its batch-size metrics, for one
# `axon bench ingest` run against a relay started here with a scratch database.
#
# usage: benches/scripts/threads.sh AXON_BIN EVENTS CONNECTIONS [more `bench ingest` args]
B=$1; N=$2; C=$3; shift 3
D=$(mktemp -d /tmp/axon-threads.XXXX)
$B keygen --out $D/k.key 2>/dev/null > $D/k.pub
printf 'addr: "127.0.0.1:0"\ndb: "%s/axon.db"\nrelay_url: "ws://perf.localhost/"\n' $D > $D/r.yaml
RUST_LOG=warn $B relay --config $D/r.yaml --allow "$(cat $D/k.pub)" > $D/out 2>$D/err &
R=$!; sleep 1; ADDR=$(sed -n 's/.*listening on //p' $D/out | head -n 1)
# Per thread name (numbered threads summed), clock ticks of CPU.
snap() { for t in /proc/$R/task/*; do printf '%s %s\n' "$(tr ' ' _ < $t/comm)" "$(awk '{print $14+$15}' $t/stat)"; done |
  awk '{n=$1; sub(/-[0-9]+$/,"",n); a[n]+=$2} END{for(k in a) print k, a[k]}' | sort; }
snap > $D/before; W0=$(awk '/^write_bytes/{print $2}' /proc/$R/io)
$B bench ingest --url ws://$ADDR --relay-url ws://perf.localhost/ --key $D/k.key --events $N --connections $C "$@" > $D/bench.txt 2>&1
grep '^ingest' $D/bench.txt
snap > $D/after; W1=$(awk '/^write_bytes/{print $2}' /proc/$R/io)
TICK_US=$((1000000 / $(getconf CLK_TCK)))
join $D/before $D/after | awk -v n=$N -v tick=$TICK_US '{d=$3-$2; t+=d; printf "  %-16s %6.1f us/event\n", $1, d*tick/n}
  END{printf "  %-16s %6.1f us/event\n", "TOTAL", t*tick/n}'
echo "  bytes written: $(( (W1-W0)/N )) per event"
curl -s http://$ADDR/metrics | grep -E 'axon_(verify|write)_batch_events_(sum|count)' | tr '\n' ' '; echo
kill $R; wait $R 2>/dev/null; rm -rf $D
