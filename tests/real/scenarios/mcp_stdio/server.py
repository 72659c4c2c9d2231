"""Scenario 4: a FastMCP server over stdio with two slow tools.

`crunch_async` awaits; `crunch_blocking` blocks the event loop in a subprocess (a tool that
shells out to a build, a linter, git...). Each tool writes a ground-truth record (its pid,
start time and the environment variable names it got) to the directory in argv[1]."""

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
from mcp.server.fastmcp import FastMCP

TRUTH = Path(sys.argv[1])
mcp = FastMCP("busy")


def _busy(kind: str) -> None:
    stat = Path("/proc/self/stat").read_text()
    record = {
        "role": f"mcp-server-{kind}",
        "pid": os.getpid(),
        "start_ticks": int(stat[stat.rindex(")") + 2 :].split()[19]),
        "env_keys": sorted(os.environ),
    }
    (TRUTH / f"mcp-busy-{kind}.json").write_text(json.dumps(record))


@mcp.tool()
async def crunch_async(seconds: int) -> str:
    _busy("async")
    await anyio.sleep(seconds)
    return "done"


@mcp.tool()
def crunch_blocking(seconds: int) -> str:
    _busy("blocking")
    subprocess.run(["sleep", str(seconds)], check=True)
    return "done"


if __name__ == "__main__":
    mcp.run()
