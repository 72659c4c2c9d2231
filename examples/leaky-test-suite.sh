#!/usr/bin/env bash
# A stand-in for a test suite that leaks, the way the suites in the seed documents do:
#  - a "test server" (Python's HTTP server) started in the background and never stopped,
#  - a daemon that double-forks into its own session (like `npm run dev &` or a detached
#    uvicorn), so it is no longer anyone's child,
#  - a helper that ignores SIGTERM (a server with a broken signal handler).
# It then reports success, as such suites do, and leaves all of them running.
set -euo pipefail
port=${DEMO_PORT:-8765}

python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1 &
setsid sh -c 'sleep 3600 & exec sleep 3601' >/dev/null 2>&1 </dev/null &
sh -c 'trap "" TERM; exec sleep 3602' >/dev/null 2>&1 </dev/null &

# Wait (bounded) until the server accepts connections, like a test fixture would.
for _ in $(seq 1 250); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.02
done
echo "test suite: 42 passed"
