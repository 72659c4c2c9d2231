"""A psutil cleaner, as a user's CI cleanup script would write it.

    python3 bench/psutil_sweep.py MARKER GRACE_SECONDS

Selects every process whose environment has RUNNER_TRACKING_ID=MARKER
(psutil.process_iter + Process.environ()), terminate()s them all, waits with
psutil.wait_procs(timeout=GRACE), and kill()s whatever is still alive. The marker is an
argument, so the script does not carry it itself (and it skips its own pid anyway).
Prints "matched=M terminated=T killed=K inner_ms=X" on stdout, where inner_ms is the time
from after `import psutil` to the end (the benchmark's wall time also includes the
interpreter's start-up and the import).
"""
import os
import sys
import time

import psutil

t0 = time.monotonic()
marker, grace = sys.argv[1], float(sys.argv[2])
me = os.getpid()
procs = []
for p in psutil.process_iter():
    if p.pid == me:
        continue
    try:
        if p.environ().get("RUNNER_TRACKING_ID") == marker:
            procs.append(p)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
for p in procs:
    try:
        p.terminate()
    except psutil.NoSuchProcess:
        pass
gone, alive = psutil.wait_procs(procs, timeout=grace)
for p in alive:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
ms = (time.monotonic() - t0) * 1000
print(f"matched={len(procs)} terminated={len(gone)} killed={len(alive)} inner_ms={ms:.1f}")
