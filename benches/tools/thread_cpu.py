#!/usr/bin/env python3
"""Per-thread CPU of a command over time, sampled from /proc every 0.2 s.

Shows how many cores a bench keeps busy phase by phase, and which threads
do it: a pipeline stage waiting on another shows up as a thread well under
one core while the total is under two.

    BARN_IMPORT_SIZES=600000000 BARN_IMPORT_ORDERS=pds \\
        python3 benches/tools/thread_cpu.py target/release/deps/import-<hash> --bench

Each line: seconds since start, cores used in the last interval, then the
four busiest threads as name-tid:ticks (100 ticks = one core for a second,
so 20 = one core over the interval). The command's own output follows.
"""
import os
import subprocess
import sys
import time

INTERVAL = 0.2


def sample(pid):
    """{tid: (name, utime + stime in ticks)} for every thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    hz = os.sysconf("SC_CLK_TCK")
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    start, prev, rows = time.time(), {}, []
    while proc.poll() is None:
        try:
            cur = sample(proc.pid)
        except OSError:
            break
        deltas = sorted(
            ((ticks - prev.get(tid, ("", 0))[1], f"{name}-{tid}") for tid, (name, ticks) in cur.items()),
            reverse=True,
        )
        total = sum(d for d, _ in deltas)
        rows.append((time.time() - start, total / hz / INTERVAL, [(d, n) for d, n in deltas[:4] if d]))
        prev = cur
        time.sleep(INTERVAL)
    output = proc.stdout.read().decode(errors="replace")
    for t, cores, top in rows:
        print(f"{t:5.1f} {cores:4.2f} cores  " + "  ".join(f"{n}:{d}" for d, n in top))
    print(output, end="")
    sys.exit(proc.wait())


if __name__ == "__main__":
    main()
