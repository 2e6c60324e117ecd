"""Serving the lesson's tools past one process: `serve`, `worker`, `queue`.

`tasks_server` builds the server every process here runs: the tools of
`tasks_demo.mcp`, each body inside commit-once and the journal, with the store's
errors named (store.py) and Docket tuned for Redis. `serve` puts it behind a
hardened HTTP server (http.py); `worker` runs its tasks from a shared Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import socket
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastmcp import Client, FastMCP
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier
from fastmcp.tools.function_tool import FunctionTool
from fastmcp_tasks import TasksExtension, creation, handlers
from rich import box
from rich.table import Table

import tasks_demo
from deploy import DemoError, model
from deploy.commit import committed
from deploy.http import is_loopback, on_http
from deploy.push import Push
from deploy.processes import LEAVE_ON, leave_now
from deploy.store import (QUEUE, RESULTS_FOR, RedisJournal, TaskRequests, freeing_expired,
                          pooled, quiet_store_faults, reads_answer_when_full,
                          renewing_the_key_probe, require_redis, same_key_as_the_queue, shared,
                          warn_if_forgetful)
from tasks_demo import CONCURRENCY, GuardedFastMCP, journaled_tools, mcp


# On Redis, a task whose worker stops renewing its claim (it died, or only froze)
# runs again elsewhere after this long: Docket's 5 minutes would hide it from
# the stories, and a worker killed mid-task costs a client 5 s, not 5 minutes.
REDELIVERY_TIMEOUT = timedelta(seconds=5)


# How long a worker with every slot busy waits to look for work again: on Redis
# 10 ms costs nothing; in memory less than fastmcp-tasks' 50 ms costs an idle
# server CPU (figures: docs/performance.md).
def check_interval(backend: str) -> timedelta:
    return timedelta(milliseconds=50 if backend.lower().startswith("memory") else 10)


class KeptTasks(TasksExtension):
    """fastmcp-tasks' extension, keeping results for `results_for` (from the end of
    their task), and in memory giving back what expires (`freeing_expired`)."""

    def __init__(self, *, results_for: timedelta = RESULTS_FOR, **settings: Any):
        super().__init__(**settings)
        self.results_for = results_for
        # A task's own keys (its id's route, arguments, snapshot) live the results'
        # lifetime and fastmcp-tasks' buffer, 15 minutes, one number for the
        # process: make the buffer the lifetime too (the same, by default).
        creation.TASK_MAPPING_TTL_BUFFER_SECONDS = handlers.TASK_MAPPING_TTL_BUFFER_SECONDS = int(
            results_for.total_seconds())

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with super().lifespan():
            docket = self.server._docket  # the lifespan made it
            docket.execution_ttl = self.results_for
            every = self.results_for.total_seconds() / 2
            freeing = (asyncio.create_task(freeing_expired(docket, every))
                       if self.docket_settings.url.startswith("memory") else None)
            try:
                yield
            finally:
                if freeing:
                    freeing.cancel()


async def tasks_server(*, backend: str = "memory://", queue: str | None = None,
                       concurrency: int = CONCURRENCY, middleware: tuple = (),
                       auth: Any = None, results_for: timedelta = RESULTS_FOR) -> FastMCP:
    """The tools of `mcp`, each body committed once and journaled, on a server with
    its own queue (servers on one backend and queue share their tasks) running
    `concurrency` bodies at once, keeping results for `results_for`; a store's
    faults named (TaskRequests)."""
    quiet_store_faults()
    reads_answer_when_full()
    one_probe_a_tool()
    server = GuardedFastMCP("tasks-demo", auth=auth, middleware=[TaskRequests(), *middleware])
    server.add_extension(KeptTasks(
        results_for=results_for, url=backend, name=queue or f"kit-{secrets.token_hex(4)}",
        concurrency=concurrency, redelivery_timeout=REDELIVERY_TIMEOUT,
        minimum_check_interval=check_interval(backend)))
    # The journal inside commit-once: a rerun that finds a result standing is no run.
    journaled_tools(server, await mcp.list_tools(run_middleware=False), around=committed)
    with_schema_lookup(server)
    server.push = Push(server)  # listeners hear each change: from any process on the store
    return server


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[FastMCP]:
    """`tasks_server(**options)`, its Docket worker running while the block lasts."""
    server = await tasks_server(**options)
    async with Client(server):
        yield server


FIRST_PRESS: list[float] = []


def same_press() -> bool:
    """True for a signal within half a second of the first: the same Ctrl-C.

    Under `uv run`, one Ctrl-C arrives twice: the terminal signals the whole
    process group, and uv forwards what it got to its child too.
    """
    FIRST_PRESS[:] = FIRST_PRESS or [time.monotonic()]
    return time.monotonic() - FIRST_PRESS[0] < 0.5


def stop_on_signals(stop: asyncio.Event, drain: bool, then: str = "") -> None:
    """The first Ctrl-C (or SIGTERM, SIGHUP) drains: `stop` is set, and running
    tasks finish first. Another leaves at once; with nothing to drain, the first."""
    def on_signal(signum: int) -> None:
        if not drain or (stop.is_set() and not same_press()):
            leave_now(signum)
        if stop.is_set():
            return
        same_press()  # the first press
        print(f"draining: running tasks finish first (Ctrl-C again to leave now{then})",
              flush=True)
        stop.set()

    for sig in LEAVE_ON:
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)


def one_probe_a_tool() -> None:
    """fastmcp-tasks checks a task's arguments through a pydantic TypeAdapter built on a
    probe function it makes anew for every task submitted, so the adapter cache (an LRU
    of 5,000, by identity) never hits: each submit builds an adapter, and up to 5,000
    are held (~24 MB over 4,000 tasks here). One probe a tool function, as the cache
    expects. (A fix for fastmcp-tasks: memoize `_call_shape_probe`.)"""
    from fastmcp_tasks import components

    if not hasattr(components._call_shape_probe, "cache_info"):
        components._call_shape_probe = functools.lru_cache(maxsize=1000)(
            components._call_shape_probe)


def with_schema_lookup(server: FastMCP) -> None:
    """Let the MCP SDK find a tool's input schema without listing every tool.

    On each tools/call the SDK checks the request's Mcp-Param-* headers against
    the tool's input schema; FastMCP gives it no way to look one up, so it runs
    a whole tools/list each time (a quarter of a plain call's cost). Only
    private attributes reach the SDK's hook: FastMCP setting it is the fix.
    """
    def schema(name: str) -> dict | None:
        found = [c for c in server.local_provider._components.values()
                 if isinstance(c, FunctionTool) and c.name == name]
        return found[0].parameters if found else None

    server._mcp_server.get_tool_input_schema = schema


async def serve(port: int, host: str, backend: str, worker: bool,
                tokens: dict[str, str], names: tuple = (),
                results_for: timedelta = RESULTS_FOR) -> None:
    """Serve the tools over streamable HTTP until stopped."""
    on_redis = shared(backend)
    if on_redis:
        await require_redis(backend)
        await warn_if_forgetful(backend)
        await same_key_as_the_queue(backend)
        renewing = asyncio.create_task(renewing_the_key_probe(backend))  # noqa: F841 (held) (held)
    try:  # bind, don't connect: a port in use, or an address not this machine's
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As uvicorn binds: a port whose last connections wait in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise DemoError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                        "choose another --port or --host") from None
    if not is_loopback(host) and not tokens:
        print(f"warning: serving on {host} without --token: anyone who can reach this "
              "address can run tools and, with a task id, read and cancel its task "
              "(and give each name clients reach it by: --allow-host NAME)",
              file=sys.stderr, flush=True)
    auth = StaticTokenVerifier({t: {"client_id": n} for t, n in tokens.items()}) if tokens else None
    server = await tasks_server(backend=pooled(backend), queue=QUEUE, auth=auth,
                                concurrency=CONCURRENCY if worker else 0,
                                results_for=results_for)
    model.model_in_place(server)  # deep_research too, when --model named a model
    stop = asyncio.Event()
    # In memory the tasks die with the process: nothing to drain, so leave.
    stop_on_signals(stop, drain=on_redis)
    async with on_http(server, port, host, names=names) as url:
        print(f"serving {url} pid={os.getpid()} backend={backend} "
              f"worker={'yes' if worker else 'no'} auth={'tokens' if tokens else 'none'}",
              flush=True)
        await stop.wait()
        server.push.close()  # each listen stream ends with its answer: not dropped
    print("drained", flush=True)


async def worker(backend: str, journal: bool, metrics: tuple[str, int] | None = None,
                 health: tuple[str, int] | None = None,
                 results_for: timedelta = RESULTS_FOR) -> None:
    """Run tasks from a shared Redis, whichever server accepted them.

    fastmcp-tasks' own worker runs the lesson's module-level `mcp` on the same
    queue: FASTMCP_DOCKET_URL=redis://... python -m fastmcp_tasks.worker_cli
    worker tasks_demo.py:mcp. This one adds commit-once, the store's faults
    named, Docket's Prometheus metrics and a health endpoint, when asked for.
    """
    from docket.instrumentation import healthcheck_server, metrics_server

    await require_redis(backend)
    await warn_if_forgetful(backend)
    await same_key_as_the_queue(backend)
    renewing = asyncio.create_task(renewing_the_key_probe(backend))  # noqa: F841 (held)
    if journal:  # the soak counts every body's runs, across processes, in Redis
        tasks_demo.JOURNAL = RedisJournal(backend)
    server = await tasks_server(backend=pooled(backend), queue=QUEUE,
                                results_for=results_for)
    model.model_in_place(server)  # deep_research too, when --model named a model
    stop = asyncio.Event()

    stop_on_signals(stop, drain=True, then="; their tasks then run again elsewhere after "
                                           f"{REDELIVERY_TIMEOUT.seconds} s")
    with contextlib.ExitStack() as endpoints:
        for flag, address, serving_it in (("--metrics-port", metrics, metrics_server),
                                          ("--health-port", health, healthcheck_server)):
            try:
                if address:
                    endpoints.enter_context(serving_it(*address))
            except OSError as error:
                raise DemoError(f"{flag}: cannot listen on {address[0]}:{address[1]} "
                                f"({error.strerror or error})") from None
        # The lifespan runs the Docket worker. (Not a client held open, as the
        # lessons do: closing one gives the lifespan 5 s, and a drain stopped there.)
        async with server._lifespan_manager():
            print(f"worker pid={os.getpid()} backend={backend}", flush=True)
            await stop.wait()
    print("drained", flush=True)


async def queue(backend: str) -> Table:
    """What waits and what runs on a shared Redis, and where: Docket's own snapshot.

    (Docket's CLI, `docket snapshot`, cannot read these tasks: it knows a task
    only by a function registered under its name, and fastmcp-tasks registers
    each tool as `tool:NAME@`. Here they are registered so, as a worker does.)
    """
    from docket import Docket

    await require_redis(backend)
    tools = [t for t in await mcp.list_tools(run_middleware=False) if t.task_config.mode != "forbidden"]
    async with Docket(name=QUEUE, url=backend) as docket:
        for tool in tools:
            docket.register(tool.fn, names=[tool.key])
        snapshot = await docket.snapshot()
    count = snapshot.total_tasks
    table = Table(title=f"{QUEUE} on {backend}, {count} task{'' if count == 1 else 's'}",
                  title_justify="left", box=box.SIMPLE)
    for column in ("task", "tool", "state", "worker", "since"):
        table.add_column(column)
    taken = snapshot.taken
    # Since the run's claim: Docket's own `started` is the last renewal of its
    # lease (about a second ago, always), so a stuck task would never look old.
    for run in sorted(snapshot.running, key=lambda r: r.started_at or r.started):
        table.add_row(*task_of(run.key), "running", run.worker,
                      f"{(taken - (run.started_at or run.started)).total_seconds():.1f} s")
    for waiting in snapshot.future:
        state = "queued" if waiting.when <= taken else "scheduled"
        table.add_row(*task_of(waiting.key), state, "",
                      f"{(taken - waiting.when).total_seconds():.1f} s")
    for seen in sorted(snapshot.workers, key=lambda w: w.name):
        table.add_row("", "", "worker", seen.name,
                      f"seen {(taken - seen.last_seen).total_seconds():.1f} s ago")
    return table


def task_of(key: str) -> tuple[str, str]:
    """Task id and tool in a Docket key: anon:ID:tool:NAME or auth:SCOPE:ID:tool:NAME."""
    parts = key.split("#")[0].split(":")  # (#leg2 and on: the legs after a question)
    tool = urllib.parse.unquote(parts[-1]).removeprefix("tool:").split("@")[0]
    return parts[1] if parts[0] == "anon" else parts[2], tool


def use_key(args: argparse.Namespace) -> None:
    """The snapshot key, from --key-file or the environment; and no bearer tokens
    in clear in a shared store unless asked for.

    A task's context snapshot (the caller's access token, every inbound header)
    sits in the store for the task's lifetime; fastmcp-tasks encrypts it when
    it has a key. A process with another key, or none, fails such a task.
    """
    from fastmcp_tasks.settings import tasks_settings
    from pydantic import SecretStr

    if args.key_file:
        try:
            tasks_settings.encryption_key = SecretStr(args.key_file.read_text().strip())
        except (OSError, UnicodeDecodeError) as error:
            raise DemoError(f"cannot read --key-file: {error}") from None
    key = tasks_settings.encryption_key  # read at each use: from the file, or the environment
    if key is not None and len(key.get_secret_value()) < 32:
        raise DemoError(f"the snapshot key holds {len(key.get_secret_value())} characters: use "
                        "at least 32 random ones (python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))')")
    if (args.command == "serve" and args.tokens and shared(args.backend) and key is None
            and not args.plaintext_snapshots):
        raise DemoError("with --token on Redis, every task's snapshot holds its caller's "
                        "bearer token: give --key-file (or FASTMCP_TASKS_ENCRYPTION_KEY), "
                        "the same to every worker, or --plaintext-snapshots to store them "
                        "in clear")
