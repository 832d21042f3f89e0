#!/usr/bin/env bash
# Weft against perftest on the same RDMA devices, side by side in one run:
# boots two linked VMs with a Soft-RoCE device each (scripts/rxe-vm pair),
# and in each of REPS rounds runs ib_write_lat, ib_write_bw, ib_read_lat,
# ib_read_bw, ib_atomic_lat and ibv_rc_pingpong (server in the first VM,
# client in the second), then Weft's counterparts (benches/src/bin/verbs_pair.rs)
# with one PE in each VM. Prints the medians and Weft's ratio to perftest.
#
# usage: benches/compare_verbs.sh [REPS] [ITERS]   (default 3 rounds of 1000)
# Soft-RoCE under software emulation: only the ratios mean anything.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3} iters=${2:-1000}
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
# server) | iterations. perftest converts CPU cycles to time with the CPU's
# nominal clock, which under emulation is not the rate the cycle counter runs
# at (its figures came out 1.4-2x too slow against the wall clock), so each
# program runs twice, with N and 6N iterations, and the client times both
# with the wall clock: the difference is N * 5 iterations without the set-up.
# That set-up (a TCP connection, the queue pairs) varies by up to a second
# between runs under emulation, so N must be large enough for 5N iterations
# to dwarf it: with N = 200 perftest's latencies came out anywhere from 0.3x
# to 2x the truth.
tests="write_lat|ib_write_lat -s 8|$iters
write_bw|ib_write_bw -s 65536|$iters
read_lat|ib_read_lat -s 8|$iters
read_bw|ib_read_bw -s 65536|$iters
atomic_lat|ib_atomic_lat|$iters
pingpong|ibv_rc_pingpong -g 1 -s 4096|$iters"
# Every run has its own port, so a client can only meet its own server;
# every run has a time limit, so a failed one cannot stall the rest. Each
# side prints a `step` line as it starts one.
limit=300
server="" client="" port=18600
for r in $(seq "$reps"); do
    while IFS='|' read -r name cmd n; do
        for k in 1 6; do
            port=$((port + 1))
            case $cmd in ibv_*) opts="-d rxe0 -p $port -n $((k * n))" ;; *) opts="-d rxe0 -x 1 -F -p $port -n $((k * n))" ;; esac
            server+="echo step $r $name $k; timeout $limit $cmd $opts >/dev/null 2>&1 || echo 'server $name failed'; "
            client+="echo step $r $name $k; ok=0; end=\$((\$(date +%s) + $limit)); while [ \$(date +%s) -lt \$end ]; do
                t0=\$(date +%s%N); if timeout $limit $cmd $opts rxe-vm-0 >/tmp/out 2>&1; then ok=1; break; fi; sleep 0.5; done
                t1=\$(date +%s%N)
                if [ \$ok = 1 ]; then echo \"perftest_wall $name $((k * n)) \$((t1 - t0))\"; else echo 'client $name failed:'; tail -5 /tmp/out; fi; "
        done
    done <<<"$tests"
    port=$((port + 1))
    server+="echo step $r weft; timeout $limit $bin/weftrun --hosts rxe-vm-0:1,rxe-vm-1:1 --launcher manual --port $port --secret-file $work/job.key $bin/verbs_pair $iters | sed 's/^/weft /'; "
    client+="echo step $r weft; timeout $limit $bin/weftrun --join rxe-vm-0:$port --secret-file $work/job.key --join-timeout $limit; "
done

scripts/rxe-vm pair --mem 2048 --timeout $((limit * 13 * reps + 300)) -- "$server" -- "$client" | tee "$work/raw"

python3 - "$work/raw" "$iters" <<'EOF'
import statistics, sys
vals, runs = {}, {}
for line in open(sys.argv[1]):
    w = line.split()
    if len(w) == 5 and w[1] == "perftest_wall":
        runs.setdefault(w[2], []).append((int(w[3]), int(w[4])))
    elif len(w) >= 5 and w[1] == "weft":
        vals.setdefault(("weft", w[2]), []).append(float(w[-1]))
# Per round, the longer run minus the shorter: time per iteration, set-up cancelled.
for name, rs in runs.items():
    for (n1, t1), (n2, t2) in zip(rs[0::2], rs[1::2]):
        ns = (t2 - t1) / (n2 - n1)
        if name.endswith("_bw"):
            v = 65536 / ns * 1e9 / (1 << 20)
        elif name == "write_lat":
            v = ns / 2e3
        else:
            v = ns / 1e3
        vals.setdefault(("perftest", name), []).append(v)
rows = [
    ("put latency (half round trip)", "write_lat", "ib_write_lat", "µs", False),
    ("put bandwidth, 64 KiB", "write_bw", "ib_write_bw", "MiB/s", True),
    ("get latency", "read_lat", "ib_read_lat", "µs", False),
    ("get bandwidth, 64 KiB", "read_bw", "ib_read_bw", "MiB/s", True),
    ("fetch_add latency", "atomic_lat", "ib_atomic_lat", "µs", False),
    ("ping-pong 4 KiB (round trip)", "pingpong", "ibv_rc_pingpong", "µs", False),
]
print("| Weft operation | perftest | perftest median | Weft median | Weft / perftest | goal |")
print("|---|---|---|---|---|---|")
missing = False
for label, key, prog, unit, bw in rows:
    p, w = vals.get(("perftest", key)), vals.get(("weft", key))
    if not p or not w:
        print(f"| {label} | {prog} | {'missing' if not p else ''} | {'missing' if not w else ''} | | |")
        missing = True
        continue
    pm, wm = statistics.median(p), statistics.median(w)
    goal = "≥ 0.90" if bw else "≤ 1.20"
    print(f"| {label} | {prog} | {pm:.2f} {unit} | {wm:.2f} {unit} | {wm / pm:.2f} | {goal} |")
print(f"\n{len(next(iter(vals.values()), []))} rounds; Soft-RoCE under software emulation: ratios only.")
sys.exit(1 if missing else 0)
EOF
