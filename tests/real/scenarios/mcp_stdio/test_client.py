"""Scenario 4: a test whose code talks to an MCP server over stdio (what pydantic-ai's
MCPServerStdio does), killed while both servers are busy in a tool call."""

import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def call(tool: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["server.py", os.environ["REAL_TRUTH_DIR"]], cwd=os.getcwd()
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool(tool, {"seconds": 3600})


def test_agent_uses_tools():
    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "crunch_async")
            tg.start_soon(call, "crunch_blocking")

    anyio.run(main)
