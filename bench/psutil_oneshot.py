"""What a user's Python cleanup script would do to snapshot processes and listeners.

Run as a fresh interpreter each time by the benchmark. With -v it prints
"<processes> <inet listeners>" so the benchmark can check it saw the spawned tree.
"""
import sys

import psutil

procs = list(psutil.process_iter(["pid", "ppid", "cmdline", "create_time"]))
conns = psutil.net_connections(kind="inet")
if "-v" in sys.argv:
    print(len(procs), sum(1 for c in conns if c.status == psutil.CONN_LISTEN))
