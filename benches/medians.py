"""Medians of repeated benchmark runs and Weft's ratio to each peer.

    python3 medians.py DIR REPS weft PEER...

Reads DIR/<name>.<i> for i in 1..REPS, each holding "measure size value"
lines, and prints one row per (measure, size) Weft reports: the medians
and weft/peer where the peer has it too. Latencies (measures ending in
"latency", "round_trip", and collectives) are better lower; everything
else higher. For collectives it also says which cells miss the goal:
at most 0.8x the best peer's time for barrier and at 8 B, at most 1.0x
at other sizes.

Where DIR/<name>.<i>.trips exist ("measure before after" lines: how long
a cache line took to cross between two cores and back, in ns, just before
and just after the run that measured it), it then prints the same table
for each placement of the cores that runs were measured in: "near" when
both crossings took at most 3x the shortest one seen (the cores share a
cache), "far" when both took longer. A virtual machine's host may move its
virtual CPUs between such placements during a repetition, and a figure
follows the placement it was measured in, so the ratios of the first table
mix placements; a run whose crossings disagree is in neither.
"""
import os
import statistics
import sys

out, reps, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
NEAR = 3


def load(name):
    """{(measure, size): [(value, (trip before, trip after) or None)]}."""
    runs = {}
    for i in range(1, reps + 1):
        trips = {}
        path = f"{out}/{name}.{i}.trips"
        if os.path.exists(path):
            for line in open(path):
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    trips[parts[0]] = (int(parts[1]), int(parts[2]))
        for line in open(f"{out}/{name}.{i}"):
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                key = (parts[0], int(parts[1]))
                runs.setdefault(key, []).append((float(parts[2]), trips.get(parts[0])))
    return runs


order = {"latency": 0, "bandwidth": 1, "bi_bandwidth": 2, "message_rate": 3,
         "barrier": 4, "broadcast": 5, "reduce": 6, "allreduce": 7, "allgather": 8,
         "alltoall": 9}
# The collectives' goal: at most 0.8x the best peer's time for barrier and at 8 B,
# at most 1.0x at every other size (the best peer is the one Weft's ratio is
# largest against).
COLLECTIVES = {"barrier", "broadcast", "reduce", "allreduce", "allgather", "alltoall"}


def table(data):
    """Prints the medians of `data` ({name: {key: [values]}}) and the ratios."""
    weft, peers = data[names[0]], names[1:]
    head = f"{'measure':<15} {'size':>8} {'weft':>12}"
    for p in peers:
        head += f" {p:>12} {'ratio':>6}"
    print(head)
    cells, missed = 0, []
    for key in sorted(weft, key=lambda k: (order.get(k[0], 9), k[0], k[1])):
        if not weft[key]:
            continue
        w = statistics.median(weft[key])
        row = f"{key[0]:<15} {key[1]:>8} {w:>12.2f}"
        ratios = []
        for p in peers:
            v = statistics.median(data[p][key]) if data[p].get(key) else None
            row += f" {v:>12.2f} {w / v:>6.2f}" if v else f" {'-':>12} {'-':>6}"
            if v:
                ratios.append(w / v)
        print(row)
        if key[0] in COLLECTIVES and ratios:
            cells += 1
            if max(ratios) > (0.8 if key[1] <= 8 else 1.0):
                missed.append(f"{key[0]} {key[1]} {max(ratios):.2f}")
    print("# lower is better for latency, round trips and collectives, higher for the rest")
    if cells:
        print(f"# goal (barrier and 8 B: at most 0.8x the best peer; larger: at most 1.0x): "
              f"{cells - len(missed)} of {cells} cells met"
              + (f"; missed: {', '.join(missed)}" if missed else ""))


runs = {n: load(n) for n in names}
print(f"# medians of {reps} runs on one node; ratio = weft / peer")
table({n: {k: [v for v, _ in rs] for k, rs in r.items()} for n, r in runs.items()})

trips = [t for r in runs.values() for rs in r.values() for _, ts in rs if ts for t in ts]
if trips:
    shortest = min(trips)

    def placement(ts):
        if ts and max(ts) <= NEAR * shortest:
            return "near"
        if ts and min(ts) > NEAR * shortest:
            return "far"
        return None

    for where in ("near", "far"):
        data = {n: {k: [v for v, ts in rs if placement(ts) == where]
                    for k, rs in r.items()} for n, r in runs.items()}
        counts = [len(vs) for vs in data[names[0]].values()]
        if not any(counts):
            continue
        bound = f"at most {NEAR * shortest}" if where == "near" else f"over {NEAR * shortest}"
        print(f"# placement {where}: runs whose line round trips before and after took {bound} ns; "
              f"medians of {min(counts)}-{max(counts)} runs")
        table(data)
