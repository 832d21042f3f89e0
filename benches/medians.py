"""Medians of repeated benchmark runs and Weft's ratio to each peer.

    python3 medians.py DIR REPS weft PEER...

Reads DIR/<name>.<i> for i in 1..REPS, each holding "measure size value"
lines, and prints one row per (measure, size) Weft reports: the medians
and weft/peer where the peer has it too. Latencies (measures ending in
"latency", "round_trip", and collectives) are better lower; everything
else higher. For collectives it also says which cells miss the goal:
at most 0.8x the best peer's time for barrier and at 8 B, at most 1.0x
at other sizes.
"""
import statistics
import sys

out, reps, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def load(name):
    runs = {}
    for i in range(1, reps + 1):
        for line in open(f"{out}/{name}.{i}"):
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                runs.setdefault((parts[0], int(parts[1])), []).append(float(parts[2]))
    return {k: statistics.median(v) for k, v in runs.items()}


data = {n: load(n) for n in names}
weft, peers = data[names[0]], names[1:]
print(f"# medians of {reps} runs on one node; ratio = weft / peer")
head = f"{'measure':<15} {'size':>8} {'weft':>12}"
for p in peers:
    head += f" {p:>12} {'ratio':>6}"
print(head)
order = {"latency": 0, "bandwidth": 1, "bi_bandwidth": 2, "message_rate": 3,
         "barrier": 4, "broadcast": 5, "reduce": 6, "allreduce": 7, "allgather": 8,
         "alltoall": 9}
# The collectives' goal: at most 0.8x the best peer's time for barrier and at 8 B,
# at most 1.0x at every other size (the best peer is the one Weft's ratio is
# largest against).
COLLECTIVES = {"barrier", "broadcast", "reduce", "allreduce", "allgather", "alltoall"}
cells, missed = 0, []
for key in sorted(weft, key=lambda k: (order.get(k[0], 9), k[0], k[1])):
    row = f"{key[0]:<15} {key[1]:>8} {weft[key]:>12.2f}"
    ratios = []
    for p in peers:
        v = data[p].get(key)
        row += f" {v:>12.2f} {weft[key] / v:>6.2f}" if v else f" {'-':>12} {'-':>6}"
        if v:
            ratios.append(weft[key] / v)
    print(row)
    if key[0] in COLLECTIVES and ratios:
        cells += 1
        if max(ratios) > (0.8 if key[1] <= 8 else 1.0):
            missed.append(f"{key[0]} {key[1]} {max(ratios):.2f}")
print("# lower is better for latency, round trips and collectives, higher for the rest")
if cells:
    print(f"# goal (barrier and 8 B: at most 0.8x the best peer; larger: at most 1.0x): "
          f"{cells - len(missed)} of {cells} cells met" + (f"; missed: {', '.join(missed)}" if missed else ""))
