#!/usr/bin/env bash
# Weft against perftest on the same RDMA devices, side by side in one run:
# boots two linked VMs with a Soft-RoCE device each (scripts/rxe-vm pair).
# In each of REPS rounds, each perftest program (ib_write_lat, ib_write_bw,
# ib_read_lat, ib_read_bw, ib_atomic_lat, ibv_rc_pingpong, ib_send_lat;
# server in the first VM, client in the second) runs next to Weft's counterpart
# (benches/src/bin/verbs_pair.rs, one PE in each VM): first perftest in odd
# rounds, first Weft in even ones. Each round gives one ratio per test; the
# script prints their median and range, with the medians of the figures, and
# how many packets each side's runs had to retransmit.
#
# Before every step the two sides meet (a TCP handshake on a port of the
# step's own, waiting up to twice the step's time limit), so a step that
# fails on one side costs that step only: the other side cannot be left
# retrying while the first moves on.
#
# usage: benches/compare_verbs.sh [REPS] [ITERS] [TEST...]
#   (default 5 rounds of 1000 iterations of every test; TEST names a row:
#   write_lat write_bw read_lat read_bw atomic_lat pingpong send_lat)
# Soft-RoCE under software emulation: only the ratios mean anything.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5} iters=${2:-1000}
shift $(($# < 2 ? $# : 2))
scripts/setup-debian.sh --verbs
scripts/rxe-vm setup
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/verbs}
cargo build --release --features weft/verbs -p weft --bin weftrun -p weft-benches --bin verbs_pair
bin=$CARGO_TARGET_DIR/release
work=$CARGO_TARGET_DIR/compare-verbs
rm -rf "$work" && mkdir -m 700 -p "$work"
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$work/job.key"
chmod 600 "$work/job.key"

# name | perftest command (the same on both sides, the client adding the
# server). Both sides time themselves, with the CPU's time-stamp counter
# (perftest) or the monotonic clock (Weft), which the VMs read cheaply
# (scripts/rxe-vm boots them with tsc=reliable). Latencies compare the
# medians of the iterations (perftest's "typical"), since under emulation
# a few iterations take 10-20 times the usual; bandwidths the message rate
# times the size; ibv_rc_pingpong gives only the mean round trip, so the
# same exchange is also compared with ib_send_lat, which gives the median.
tests="write_lat|ib_write_lat -s 8
write_bw|ib_write_bw -s 65536
read_lat|ib_read_lat -s 8
read_bw|ib_read_bw -s 65536
atomic_lat|ib_atomic_lat
pingpong|ibv_rc_pingpong -g 1 -s 4096
send_lat|ib_send_lat -s 4096"
if (($#)); then
    picked=""
    for t in "$@"; do
        line=$(grep "^$t|" <<<"$tests") || { echo "unknown test $t" >&2; exit 2; }
        picked+="$line"$'\n'
    done
    tests=${picked%$'\n'}
fi
# One CPU per VM: under Soft-RoCE the NIC's work runs on the CPU that takes
# its interrupts, so with two, a program's latency depended on which CPU it
# ran on (weftrun binds a rank to the first core; perftest floats), and the
# four emulated CPUs of the pair outnumbered this machine's two cores.
# Every run has its own port, so a client can only meet its own server;
# every run has a time limit, so a failed one cannot stall the rest. Each
# side prints a `step` line as it starts one.
limit=300
# Weft's heap: what the program uses, rounded up. The emulated CPU zeroes
# and registers the default 128 MiB in seconds at every start, a fifth of a
# short run (the timed loops are not affected either way).
heap=16M
# Both sides' queue pairs wait 67 ms for an acknowledgement before sending
# again (timeout 14, perftest's default; Weft's is 16, 268 ms): a packet
# lost at the end of a burst costs each side the same.
ack_timeout=14
server="" client="" port=18600
# Each step also reports the retransmissions its VM's device made meanwhile
# (Soft-RoCE's requester count, `completer_retry_err`): a lost packet that
# only the queue pair's timer recovers stalls a run for 67 ms.
retries="cat /sys/class/infiniband/rxe0/ports/1/hw_counters/completer_retry_err 2>/dev/null || echo 0"
counted() { # SIDE STEP: STEP, then a `retries` line for it
    echo "c0=\$($retries); $2 echo \"retries $r $name $1 \$((\$($retries) - c0))\"; "
}
# The handshake: the server listens, the client connects (retrying until
# the server is up); either gives up after LIMIT seconds (twice a step's
# limit) and says so.
cat >"$work/meet.py" <<'EOF'
import socket, sys, time
role, host, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + limit
try:
    if role == "server":
        with socket.create_server(("", port)) as s:
            s.settimeout(limit)
            c, _ = s.accept()
            c.sendall(b"go")
            c.close()
    else:
        while True:
            try:
                with socket.create_connection((host, port), timeout=5) as c:
                    if c.recv(2) == b"go":
                        break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
except OSError as e:
    print(f"meet on port {port} failed: {e}")
EOF
met() { # SIDE PORT STEP: the meeting on PORT, then STEP
    case $1 in server) echo "python3 $work/meet.py server - $2 $((limit * 2)); $3" ;;
    *) echo "python3 $work/meet.py client rxe-vm-0 $2 $((limit * 2)); $3" ;; esac
}
# How long a perftest client retries after the meeting, while its server starts.
retry=60
for r in $(seq "$reps"); do
    while IFS='|' read -r name cmd; do
        port=$((port + 1))
        case $cmd in ibv_*) opts="-d rxe0 -p $port -n $iters" ;; *) opts="-d rxe0 -x 1 -F -p $port -n $iters" ;; esac
        ps="echo step $r $name perftest; timeout $limit $cmd $opts >/dev/null 2>&1 || echo 'server $name failed'; "
        pc="echo step $r $name perftest; ok=0; end=\$((\$(date +%s) + $retry)); while [ \$(date +%s) -lt \$end ]; do
            if timeout $limit $cmd $opts rxe-vm-0 >/tmp/out 2>&1; then ok=1; break; fi; sleep 0.5; done
            if [ \$ok = 1 ]; then awk '/usec\\/iter/ || (\$1 ~ /^[0-9]+\$/ && NF >= 5) {print \"perftest $r $name\", \$0}' /tmp/out;
            else echo 'client $name failed:'; tail -5 /tmp/out; fi; "
        port=$((port + 1))
        ws="echo step $r $name weft; WEFT_SYMMETRIC_SIZE=$heap WEFT_VERBS_TIMEOUT=$ack_timeout timeout $limit $bin/weftrun --hosts rxe-vm-0:1,rxe-vm-1:1 --launcher manual --port $port --secret-file $work/job.key $bin/verbs_pair $name $iters | sed 's/^/weft $r /'; "
        wc="echo step $r $name weft; timeout $limit $bin/weftrun --join rxe-vm-0:$port --secret-file $work/job.key --join-timeout $limit; "
        ps=$(met server $((port + 1000)) "$(counted perftest "$ps")")
        pc=$(met client $((port + 1000)) "$(counted perftest "$pc")")
        ws=$(met server $((port + 2000)) "$(counted weft "$ws")")
        wc=$(met client $((port + 2000)) "$(counted weft "$wc")")
        if ((r % 2)); then server+="$ps$ws" client+="$pc$wc"; else server+="$ws$ps" client+="$wc$pc"; fi
    done <<<"$tests"
done

scripts/rxe-vm pair --cpus 1 --mem 2048 --timeout $((limit * 12 * reps + 300)) -- "$server" -- "$client" | tee "$work/raw"

python3 - "$work/raw" $(cut -d'|' -f1 <<<"$tests") <<'EOF'
import re, statistics, sys
picked = sys.argv[2:]
# (side, round, test) -> figure: µs (median of the iterations, or the mean
# round trip for pingpong) or MiB/s.
fig = {}
# (side, test) -> retransmissions over all rounds, both VMs.
retries = {}
for line in open(sys.argv[1]):
    w = line.split()
    if len(w) == 6 and w[1] == "retries" and w[5].isdigit():
        key = (w[4], w[3])
        retries[key] = retries.get(key, 0) + int(w[5])
        continue
    if len(w) < 4 or w[1] not in ("perftest", "weft"):
        continue
    side, rnd, name, rest = w[1], w[2], w[3], w[4:]
    try:
        if side == "weft":
            # name size median mean (latencies, the mean for pingpong) | name size MiB/s
            v = float(rest[2] if name == "pingpong" else rest[1])
        elif name == "pingpong":
            v = float(re.search(r"= ([0-9.]+) usec/iter", line).group(1))
        elif name.endswith("_bw"):
            # #bytes #iterations peak average[MiB/s] MsgRate
            v = float(rest[3])
        else:
            # #bytes #iterations t_min t_max t_typical ...
            v = float(rest[4])
    except (ValueError, IndexError, AttributeError):
        continue
    fig[(side, rnd, name)] = v
rows = [
    ("put latency (half round trip), median", "write_lat", "ib_write_lat", "µs", False),
    ("put bandwidth, 64 KiB", "write_bw", "ib_write_bw", "MiB/s", True),
    ("get latency, 8 B, median", "read_lat", "ib_read_lat", "µs", False),
    ("get bandwidth, 64 KiB", "read_bw", "ib_read_bw", "MiB/s", True),
    ("fetch_add latency, median", "atomic_lat", "ib_atomic_lat", "µs", False),
    ("ping-pong 4 KiB (round trip), mean", "pingpong", "ibv_rc_pingpong", "µs", False),
    ("send/recv latency 4 KiB (half round trip), median", "send_lat", "ib_send_lat", "µs", False),
]
rounds = sorted({r for (_, r, _) in fig}, key=int)
print("| Weft operation | perftest | perftest | Weft | Weft / perftest (median of rounds) | range | goal |")
print("|---|---|---|---|---|---|---|")
missing = False
rows = [row for row in rows if row[1] in picked]
for label, key, prog, unit, bw in rows:
    both = [r for r in rounds if ("perftest", r, key) in fig and ("weft", r, key) in fig]
    if not both:
        print(f"| {label} | {prog} | missing | | | | |")
        missing = True
        continue
    p = [fig[("perftest", r, key)] for r in both]
    w = [fig[("weft", r, key)] for r in both]
    ratios = [b / a for a, b in zip(p, w)]
    goal = "≥ 0.90" if bw else "≤ 1.20"
    print(f"| {label} | {prog} | {statistics.median(p):.1f} {unit} | {statistics.median(w):.1f} {unit} "
          f"| {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} | {goal} |")
print(f"\n{len(rounds)} rounds; Soft-RoCE under software emulation: ratios only.")
print("Retransmissions over all rounds (both devices), perftest / Weft: " + "; ".join(
    f"{key} {retries.get(('perftest', key), 0)} / {retries.get(('weft', key), 0)}"
    for _, key, _, _, _ in rows))
sys.exit(1 if missing else 0)
EOF
