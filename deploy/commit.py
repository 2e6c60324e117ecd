"""Commit-once: on Redis, the first result of a task stands, and its effect happens once.

On Redis a task runs at least once: a worker that stops renewing its claim
(killed, paused, cut off from Redis) has its task run again elsewhere, and
Docket keeps the last result written. `committed` wraps a tool's body so that
the first run to finish stores its result by SET NX under the task id, with
the effect that goes with it (here an outbox line; in your server, the email)
in the same atomic step; any later run returns the result that stands.

What it costs a first run: one round trip, the commit, and one read a progress
report (`owner_only`). Only a run Docket marks as redelivered reads the store
before its body (has a run finished it?).
`bench --distributed` shows the ratio to a minimal FastMCP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from docket.dependencies import current_execution, current_worker
from fastmcp_tasks.context import _snapshot_redis_key, get_task_context
from fastmcp_tasks.input_store import _args_key, _current_leg_key, _leg_number_key
from fastmcp_tasks.keys import task_redis_prefix
from mcp_types import InputRequiredResult
from pydantic import TypeAdapter
from redis.exceptions import RedisError


# A commit that cannot reach the store keeps trying: were it to give up, its run
# would end the task as a completed error, and the run that took the task over
# would then replace that error with its result (a partition longer than the
# retries did exactly that, 1 run in 6). Whichever run commits first stands.
PAUSES = (0.1, 0.2, 0.4, 0.8, 1.6)  # then every 2 s, for as long as the store is away


async def store_command(run: Any, command: Callable) -> Any:
    """A command to Docket's store, tried until the store answers."""
    for attempt in itertools.count():
        try:
            async with run.docket.redis() as redis:
                return await command(redis)
        except RedisError:
            await asyncio.sleep(PAUSES[attempt] if attempt < len(PAUSES) else 2.0)


def owner_only(run: Any, worker: str) -> None:
    """Progress from `run` only while it holds its task: once a run's claim lapsed
    (paused, cut off from the store) and another worker took the task, the old run
    reports no more (it runs on, and its result still counts if it commits first).
    A report costs one read more: who holds the task now."""
    runs_key = run.docket.runs_key(run.key)

    async def holds() -> bool:
        async with run.docket.redis() as redis:
            holder = await redis.hget(runs_key, "worker")
        return holder is None or holder.decode() == worker

    for name in ("set_total", "increment", "set_message"):
        async def guarded(*args: Any, _report: Callable = getattr(run.progress, name),
                          **kwargs: Any) -> None:
            if await holds():
                await _report(*args, **kwargs)

        setattr(run.progress, name, guarded)


# EXPIRE brings back no key that is gone: a lost task stays lost.
EXPIRE_ALL = "for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[1]) end"


async def keep_task_for(run: Any, task: Any, seconds: int) -> None:
    """Make the task's own keys (fastmcp-tasks': its id's route, arguments, leg
    and snapshot) live `seconds` from now."""
    docket, scope, task_id = run.docket, task.task_scope, task.task_id
    record = docket.key(f"{task_redis_prefix(scope)}:{task_id}")
    keys = [record, f"{record}:created_at", f"{record}:poll_interval",
            *(own(docket, scope, task_id) for own in (_current_leg_key, _leg_number_key,
                                                       _args_key, _snapshot_redis_key))]
    with contextlib.suppress(RedisError):  # a store away now: polls renew them, as before
        async with docket.redis() as redis:
            await redis.eval(EXPIRE_ALL, len(keys), *keys, str(seconds))


async def keeping_task(run: Any, task: Any, keep: int) -> None:
    """While a body runs, its task's own keys live at least half of `keep` more.

    fastmcp-tasks renews them at each poll, to `keep` (twice the results'
    lifetime): a body that ran longer than that with nobody polling ended into
    an id nobody could find (past 30 minutes by default). Renewed every quarter
    of `keep`, the keys outlive the result when the body ends; a body that
    waited in the queue that long is renewed first. A short body costs nothing."""
    if (datetime.now(timezone.utc) - run.when).total_seconds() >= keep / 4:
        await keep_task_for(run, task, keep)
    while True:
        await asyncio.sleep(keep / 4)
        await keep_task_for(run, task, keep)


# The first run to finish stores its result and posts to the outbox, atomically,
# and hears nothing back; a later run hears the result that stands.
# A task whose record is gone (the store restarted empty, or was flushed) is no
# task any more: its result is not committed, and its effect not posted.
COMMIT = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'lost'}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -10000, -1)
  return false
end
return redis.call('GET', KEYS[1])"""
AS_JSON = TypeAdapter(Any)


async def first_result(run: Any, task: Any, key: str, keep: int, body: Callable,
                       *args: Any, **kwargs: Any) -> Any:
    """The body's result, or the one a run committed first; its own committed if none."""
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
    as_json = json.dumps(AS_JSON.dump_python(result, mode="json"))  # models, dates...
    record = run.docket.key(f"{task_redis_prefix(task.task_scope)}:{task.task_id}")
    other = await store_command(run, lambda redis: redis.eval(
        COMMIT, 3, key, run.docket.key("outbox"), record, as_json, str(keep),
        f"{task.task_id} completed by process {os.getpid()}"))
    if isinstance(other, list):
        logging.getLogger("tasks_demo").warning(
            "task %s ended, but the task store has no record of it any more (it "
            "restarted empty, or the record expired): its result is not kept", task.task_id)
        return result
    return result if other is None else json.loads(other)  # another run's, first


def committed(body: Callable) -> Callable:
    """`body`, run as a task at least once, returning the first result to be committed."""

    @functools.wraps(body)
    async def once(*args: Any, **kwargs: Any) -> Any:
        task = get_task_context()
        if task is None:  # a plain call runs once, inside its request
            return await body(*args, **kwargs)
        run = current_execution.get()  # Docket's run: its store, shared by every worker
        owner_only(run, current_worker.get().name)
        key = run.docket.key(f"committed:{task.task_id}")
        # As long as the task's own keys, so a late run still finds it.
        keep = int(2 * run.docket.execution_ttl.total_seconds())
        keeping = asyncio.create_task(keeping_task(run, task, keep))
        try:
            return await first_result(run, task, key, keep, body, *args, **kwargs)
        finally:
            keeping.cancel()

    return once
