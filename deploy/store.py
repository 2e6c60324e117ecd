"""The task store on Redis: reached, shared, bounded, named when it fails.

A request that only reads or writes the store gets its answer within
STORE_DEADLINE, and a store that is down, frozen or full is named in one line
(TaskRequests). Every process on a queue must share the snapshot key
(same_key_as_the_queue). RedisJournal keeps the lessons' journal in Redis, for
the stories that count runs across processes. In memory, `freeing_expired`
gives back what an expired task held.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from fastmcp.server.middleware import Middleware
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError

from deploy import DemoError
from tasks_demo import Journal


async def require_redis(url: str) -> None:
    from redis.asyncio import Redis

    try:
        redis = Redis.from_url(url, socket_connect_timeout=2)
    except ValueError as error:
        raise DemoError(f"--backend {url}: {error}") from None
    try:
        await redis.ping()
    except Exception as error:
        raise DemoError(f"cannot reach Redis at {url} ({error}): start redis-server "
                        "or check --backend") from None
    finally:
        await redis.aclose()


async def forgets_on_restart(url: str) -> bool:
    """True when this Redis keeps nothing across a restart: no append-only file
    and no RDB saves. (A Redis that refuses CONFIG, as managed ones may: unknown,
    so no.)"""
    from redis.asyncio import Redis

    redis = Redis.from_url(url, socket_connect_timeout=2, decode_responses=True)
    try:
        config = {**await redis.config_get("appendonly"), **await redis.config_get("save")}
    except RedisError:
        return False
    finally:
        await redis.aclose()
    return config.get("appendonly") == "no" and not config.get("save")


async def warn_if_forgetful(url: str) -> None:
    if await forgets_on_restart(url):
        print(f"warning: the Redis at {url} keeps no data across a restart (no append-only "
              "file, no RDB saves): a Redis restart loses every task (docs/deployment.md)",
              file=sys.stderr, flush=True)


QUEUE = "tasks-demo"  # the module-level mcp's: every serve and worker process here shares it
SHARED = ("redis", "rediss", "unix")  # the backends other processes can reach (Redis)


def shared(backend: str) -> bool:
    return urllib.parse.urlsplit(backend).scheme.lower() in SHARED


def pooled(backend: str) -> str:
    """redis-py's pool holds 100 connections and then *fails* a command rather
    than wait: under load, requests would fail (-32603). Room for more."""
    if shared(backend) and "max_connections" not in backend:
        return backend + ("&" if "?" in backend else "?") + "max_connections=1000"
    return backend


# A request that only reads or writes the task store (tasks/*, and a tools/call
# from a client that asked for tasks) gets its answer within STORE_DEADLINE; a
# store that is down, frozen or full is named in one line, not "Internal error".
STORE_DEADLINE = 10.0  # seconds
RESULTS_FOR = timedelta(minutes=15)  # Docket's own: how long a result can be read


class StoreMark:
    """Whether the task store is still the one this process began on. A process leaves
    a mark in it (a random key) at its first request; a store that restarted empty,
    or was flushed, lost the mark with everything else. Looked at when an id is not
    found: such a store is then named, in the log once and to each such caller."""

    def __init__(self) -> None:
        self.mark, self.emptied_at = secrets.token_hex(8), None

    async def leave(self, docket: Any) -> None:
        async with docket.redis() as redis:
            if not await redis.set(docket.key("store-mark"), self.mark, nx=True):
                self.mark = (await redis.get(docket.key("store-mark"))).decode()

    async def emptied(self, docket: Any) -> str | None:
        """When this process saw the store come back empty (ISO time), or None."""
        async with docket.redis() as redis:
            found = await redis.get(docket.key("store-mark"))
        if found is None or found.decode() != self.mark:
            self.emptied_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            logging.getLogger("tasks_demo").warning(
                "the task store restarted empty (noticed %s): every task it held was lost",
                self.emptied_at)
            await self.leave(docket)  # the store as it is now: the next loss is news again
        return self.emptied_at


class TaskRequests(Middleware):
    """Bound and name what the task store does to a request (`serve`, the lessons)."""

    def __init__(self) -> None:
        self.store: StoreMark | None = None

    async def on_request(self, context: Any, call_next: Callable) -> Any:
        docket = context.fastmcp_context and context.fastmcp_context.fastmcp._docket
        if self.store is None and docket is not None and shared(docket.url):
            self.store = StoreMark()
            await self.store.leave(docket)
        try:
            return await self.bounded(context, call_next)
        except MCPError as error:
            if self.store is None or not error.error.message.endswith(" not found"):
                raise
            emptied = await self.store.emptied(docket)
            if emptied is None:
                raise
            raise MCPError(code=error.error.code, message=(
                f"{error.error.message}: the task store restarted empty (noticed {emptied}); "
                "a task from before then was lost")) from None

    async def bounded(self, context: Any, call_next: Callable) -> Any:
        params = context.message if isinstance(context.message, dict) else {}
        task_id = params.get("taskId")
        if task_id is not None and not re.fullmatch(r"[\w-]{1,100}", str(task_id), re.ASCII):
            # Not an id this server would issue: no store lookup, the usual answer.
            shown = str(task_id)[:50].encode("ascii", "backslashreplace").decode()
            raise MCPError(code=INVALID_PARAMS, message=f"Task {shown} not found")
        ctx = context.fastmcp_context
        # (A listen stream is no request to bound: it lives until its client leaves.)
        bounded = context.method.startswith("tasks/") or ctx is not None and (
            ctx.client_extension_settings(TASKS_EXTENSION_ID) is not None
            and context.method != "subscriptions/listen")
        try:
            if not bounded:
                return await call_next(context)
            return await asyncio.wait_for(call_next(context), STORE_DEADLINE)
        except asyncio.TimeoutError:
            raise MCPError(code=INTERNAL_ERROR, message="task store unavailable: no answer "
                           f"within {STORE_DEADLINE:.0f} s (is Redis frozen?)") from None
        except RedisError as error:  # the details (an address, say) stay in the server's log
            logging.getLogger("tasks_demo").warning("task store: %r", error)
            raise MCPError(code=INTERNAL_ERROR,
                           message=f"task store unavailable: Redis {fault_of(error)}") from None


def fault_of(error: BaseException) -> str:
    return ("is full (maxmemory)" if isinstance(error, OutOfMemoryError) else
            "is unreachable" if isinstance(error, (RedisConnectionError, OSError)) else
            f"failed ({type(error).__name__})")


class StoreFaultLines(logging.Filter):
    """A fault of the store that the code expects (Redis gone, frozen, full) is one
    named line in the log, not a traceback, and the same line at most once every
    `every` seconds: Docket's loops (heartbeat, scheduler, lease renewal) and a
    task's run each log one a second, with a traceback or not, while Redis is away."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.every, self.last = every, {}

    def filter(self, record: logging.LogRecord) -> bool:
        shown = getattr(record, "store_fault_shown", None)
        if shown is not None:  # (decided at the record's first handler: the same at all)
            return shown
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (RedisError, ConnectionError, asyncio.TimeoutError)):
            line = f"{record.getMessage()}: task store: Redis {fault_of(error)}"
            record.msg, record.args, record.exc_info, record.exc_text = line, None, None, None
        elif not (record.name.startswith("docket") and record.levelno >= logging.WARNING
                  and error is None):
            return True
        else:  # Docket's own, about the store: "Redis is unavailable, sleeping...", each second
            line = record.getMessage()
        record.store_fault_shown = shown = (
            time.monotonic() - self.last.get(line, -self.every) >= self.every)
        if shown:
            self.last[line] = time.monotonic()
        return shown


def quiet_store_faults() -> None:
    """Every handler this process logs through names a store fault in one line."""
    lines = StoreFaultLines()
    for handler in [logging.lastResort, *logging.root.handlers,
                    *logging.getLogger("fastmcp").handlers]:
        if handler is not None and not any(isinstance(f, StoreFaultLines)
                                           for f in handler.filters):
            handler.addFilter(lines)


def reads_answer_when_full() -> None:
    """While Redis is full (maxmemory) it refuses every command inside MULTI, reads
    too; Docket reads a run's two hashes in one (Execution.sync), so tasks/get failed
    for tasks that exist. The two reads need no transaction: read them in a plain
    pipeline, and reads go on answering while writes are refused. (A fix for Docket.)"""
    from docket.execution import Execution

    async def sync(self: Execution) -> None:
        with self._maybe_suppress_instrumentation():
            async with self.docket.redis() as redis:
                try:
                    pipeline = redis.pipeline(transaction=False)
                except TypeError:  # memory://'s store: no transactions to leave out
                    pipeline = redis.pipeline()
                async with pipeline as pipe:
                    pipe.hgetall(self._redis_key)
                    self.progress._read(pipe)
                    data, progress_data = await pipe.execute()
        self._apply_runs_data(data)
        self.progress._apply(progress_data)

    Execution.sync = sync


async def same_key_as_the_queue(backend: str) -> None:
    """Refuse to start with another snapshot key than the queue's other processes.

    Every process on a queue must share the key (or all have none): one that
    cannot read a task's snapshot fails that task, with a message that names
    a dependency, not the key. So the first process to start seals a probe
    with its key; each later one must open it, or say so here in one line.
    The probe lives while a process renews it (every KEY_PROBE_TTL / 3): a
    minute after the last process stops, a new key may take the queue over.
    """
    from fastmcp_tasks.encryption import SnapshotDecryptionError, snapshot_codec
    from redis.asyncio import Redis

    redis, codec, probe = Redis.from_url(backend), snapshot_codec(), f"{QUEUE}:key-probe"
    try:
        await redis.set(probe, codec.encode(QUEUE), nx=True, ex=KEY_PROBE_TTL)
        codec.decode(await redis.get(probe))
        await redis.expire(probe, KEY_PROBE_TTL)  # opened: this process renews it
    except SnapshotDecryptionError:
        mine = "this process has a key" if codec.protected else "this process has no key"
        raise DemoError(f"{mine}, and the other processes on {QUEUE} do not share it: give "
                        "every server and worker the same --key-file (to change keys: stop "
                        f"them all, wait {KEY_PROBE_TTL} s, start them again)") from None
    finally:
        await redis.aclose()


KEY_PROBE_TTL = 60  # seconds


async def renewing_the_key_probe(backend: str) -> None:
    while True:
        await asyncio.sleep(KEY_PROBE_TTL / 3)
        try:
            await same_key_as_the_queue(backend)
        except Exception as error:  # the store is away, or another key took it: say so
            print(f"warning: key probe: {error}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Past one machine: replicas behind a load balancer, a soak with faults
# --------------------------------------------------------------------------
# The 2026-07-28 transport is stateless: each request is one POST that says
# everything (protocol version, method, tool name in the `Mcp-Name` header,
# client capabilities in `_meta`), and a task lives in Redis, not in the
# replica that accepted it. So any replica answers any request, and a plain
# round-robin balancer needs no stickiness. (Clients on the older 2025-11-25
# handshake hold a session, `Mcp-Session-Id`, in one replica's memory: for
# them the balancer must route by that header: docs/deployment.md.)

# memory://'s store, burner-redis (0.1.7, the newest), hides a key that has
# expired but never frees it: a long-running memory:// server grew by every task
# it had ever run (docs/performance.md). A key deleted it frees. So: keys seen
# at one look and gone at the next have expired: delete them, in one script
# that leaves any made again since. Every key of a task lives at least the results'
# lifetime, so a look every half of that sees each one.
DELETE_IF_GONE = ("for _, key in ipairs(KEYS) do "
                  "if redis.call('EXISTS', key) == 0 then redis.call('DEL', key) end end")


async def freeing_expired(docket: Any, every: float) -> None:
    """Every `every` seconds, free what expired in `docket`'s memory:// store; then
    hand the freed memory back to the system (glibc keeps it otherwise)."""
    seen: set[bytes] = set()
    while True:
        await asyncio.sleep(every)
        async with docket.redis() as store:
            now = set(await store.keys(docket.key("*")))
            gone = list(seen - now)
            for start in range(0, len(gone), 1000):
                await store.eval(DELETE_IF_GONE, len(gone[start:start + 1000]),
                                 *gone[start:start + 1000])
        seen = now
        if gone:
            with contextlib.suppress(OSError, AttributeError):  # glibc's only
                ctypes.CDLL(None).malloc_trim(0)


class RedisJournal(Journal):
    """The journal kept in Redis too: what every process's bodies did, in one place."""

    def __init__(self, url: str):
        from redis.asyncio import Redis

        super().__init__()
        self.redis = Redis.from_url(url)

    async def note(self, key: str, event: str) -> None:
        from redis.exceptions import RedisError

        await super().note(key, event)
        for _ in range(100):  # through a Redis restart: no run may go unrecorded
            try:
                await self.redis.rpush(f"journal:{key}",
                                       f"{event} {os.getpid()} {time.time():.3f}")
                return
            except RedisError:
                await asyncio.sleep(0.1)
