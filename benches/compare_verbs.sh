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

# name | perftest command (the same on both sides, the client adding the server)
tests="write_lat|ib_write_lat -s 8 -n $iters
write_bw|ib_write_bw -s 65536 -n $((5 * iters))
read_lat|ib_read_lat -s 8 -n $iters
read_bw|ib_read_bw -s 65536 -n $((5 * iters))
atomic_lat|ib_atomic_lat -n $iters
pingpong|ibv_rc_pingpong -g 1 -s 4096 -n $iters"
# Every step of every round has its own port, so a client can only meet its
# own server; every step has a time limit, so a failed one cannot stall the
# rest. Each side prints a `step` line as it starts one.
limit=300
server="" client="" port=18600
for r in $(seq "$reps"); do
    while IFS='|' read -r name cmd; do
        port=$((port + 1))
        case $cmd in ibv_*) opts="-d rxe0 -p $port" ;; *) opts="-d rxe0 -x 1 -F -p $port" ;; esac
        server+="echo step $r $name; timeout $limit $cmd $opts >/dev/null 2>&1 || echo 'server $name failed'; "
        client+="echo step $r $name; ok=0; end=\$((\$(date +%s) + $limit)); while [ \$(date +%s) -lt \$end ]; do
            if timeout $limit $cmd $opts rxe-vm-0 >/tmp/out 2>&1; then ok=1; break; fi; sleep 0.5; done
            [ \$ok = 1 ] || { echo 'client $name failed:'; tail -5 /tmp/out; }
            case $name in
                pingpong) awk '/usec\\/iter/ {print \"perftest $name\", \$(NF-1)}' /tmp/out ;;
                *_bw) awk 'f && NF >= 5 {print \"perftest $name\", \$4; exit} /#bytes/ {f=1}' /tmp/out ;;
                *) awk 'f && NF >= 6 {print \"perftest $name\", \$6; exit} /#bytes/ {f=1}' /tmp/out ;;
            esac; "
    done <<<"$tests"
    port=$((port + 1))
    server+="echo step $r weft; timeout $limit $bin/weftrun --hosts rxe-vm-0:1,rxe-vm-1:1 --launcher manual --port $port --secret-file $work/job.key $bin/verbs_pair $iters | sed 's/^/weft /'; "
    client+="echo step $r weft; timeout $limit $bin/weftrun --join rxe-vm-0:$port --secret-file $work/job.key --join-timeout $limit; "
done

scripts/rxe-vm pair --mem 2048 --timeout $((limit * 7 * reps + 300)) -- "$server" -- "$client" | tee "$work/raw"

python3 - "$work/raw" <<'EOF'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    w = line.split()
    if len(w) >= 3 and w[1] in ("perftest", "weft"):
        key = (w[1], w[2])
        vals.setdefault(key, []).append(float(w[-1]))
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
