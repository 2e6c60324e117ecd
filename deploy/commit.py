"""Commit-once: on Redis, the first result of a task stands, and its effect happens once.

On Redis a task runs at least once: a worker that stops renewing its claim
(killed, paused, cut off from Redis) has its task run again elsewhere, and
Docket keeps the last result written. `committed` wraps a tool's body so that
the first run to finish stores its result by SET NX under the task id, with
the effect that goes with it (here an outbox line; in your server, the email)
in the same atomic step; any later run returns the result that stands.

What it costs a first run: one round trip, the commit. Only a run Docket marks
as redelivered reads the store before its body (has a run finished it?).
`bench --distributed` shows the ratio to a minimal FastMCP server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable
from typing import Any

from docket.dependencies import current_execution
from fastmcp_tasks.context import get_task_context
from mcp_types import InputRequiredResult
from pydantic import TypeAdapter
from redis.exceptions import RedisError


async def store_command(run: Any, command: Callable) -> Any:
    """A command to Docket's store, retried for ~6 s: a Redis restart takes about one."""
    for pause in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, None):
        try:
            async with run.docket.redis() as redis:
                return await command(redis)
        except RedisError:
            if pause is None:
                raise
            await asyncio.sleep(pause)


# The first run to finish stores its result and posts to the outbox, atomically,
# and hears nothing back; a later run hears the result that stands.
COMMIT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -10000, -1)
  return false
end
return redis.call('GET', KEYS[1])"""
AS_JSON = TypeAdapter(Any)


def committed(body: Callable) -> Callable:
    """`body`, run as a task at least once, returning the first result to be committed."""

    @functools.wraps(body)
    async def once(*args: Any, **kwargs: Any) -> Any:
        task = get_task_context()
        if task is None:  # a plain call runs once, inside its request
            return await body(*args, **kwargs)
        run = current_execution.get()  # Docket's run: its store, shared by every worker
        key = run.docket.key(f"committed:{task.task_id}")

        async def standing() -> Any:
            return await store_command(run, lambda redis: redis.get(key))

        if run.redelivered and (first := await standing()) is not None:
            return json.loads(first)  # a run finished it already
        try:
            result = await body(*args, **kwargs)
        except Exception:  # a late run that fails returns the standing result too
            if (first := await standing()) is not None:
                return json.loads(first)
            raise
        if isinstance(result, InputRequiredResult):
            return result  # a question, not an end: nothing to commit yet
        # Outlives the task's own keys (kept its TTL), so a late run still finds it.
        keep = str(int(2 * run.docket.execution_ttl.total_seconds()))
        as_json = json.dumps(AS_JSON.dump_python(result, mode="json"))  # models, dates...
        other = await store_command(run, lambda redis: redis.eval(
            COMMIT, 2, key, run.docket.key("outbox"), as_json, keep,
            f"{task.task_id} completed by process {os.getpid()}"))
        return result if other is None else json.loads(other)  # another run's, first

    return once
