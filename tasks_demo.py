# /// script
# requires-python = ">=3.10"
# dependencies = [  # what this file imports
#     "fastmcp[tasks]>=4.1.4,<5",
#     "h11",  # uvicorn's HTTP/1.1 parser: `serve` bounds slow clients with it
#     "httpx2",  # FastMCP's HTTP client: its errors, when a server goes away, are one line
#     "mcp",
#     "mcp-types",
#     "pydantic",
#     "pydantic-ai-slim",  # imported only by `research`: light, and offline-testable
#     "pydocket[metrics]",  # with the metrics `worker --metrics-port` serves
#     "redis",
#     "rich",
#     "uvicorn",
# ]
# [tool.uv]
# exclude-newer = "2026-12-03T00:00:00Z"  # tasks_demo.py.lock, beside it, pins each version
# ///
"""MCP background tasks, taught by running them.

A background task is a tool call the server answers with a task id instead of
a result (SEP-2663, the `io.modelcontextprotocol/tasks` extension). The work
runs on the server; anyone holding the id asks `tasks/get` for the state, the
latest status message and, at the end, the result; `tasks/update` answers a
question the task asked; `tasks/cancel` stops it. FastMCP runs tasks on Docket,
a task queue kept in Redis (or in this process's memory), with workers.

What a task guarantees (each lesson below shows one, and checks it):
- the work goes on with no client connected: a client that closed, or whose
  process was killed, comes back by id and gets the result;
- everyone holding the id sees one result, kept 15 minutes; once seen, fixed;
- cancel stops the body; a tool's error is an answer (`completed`, isError);
- a task can stop to ask its client a question, and resume with the answer;
- a server runs at most `concurrency` bodies at once; the rest wait, queued.
What it does not give: speed (asyncio.gather is as concurrent); queued versus
running (both are `working`); exactly once (on Redis a body whose worker died
or stalled runs again elsewhere: make effects idempotent, as `task_body`
does); privacy (without authentication the id is the only key).

    uv run tasks_demo.py all              # every lesson, in this order
    uv run tasks_demo.py poll             # one of them
    uv run tasks_demo.py --help           # --scale, the stories, the bench

Down to `# END OF SERVER` is a whole server: copy it into a file of your own
and serve it (`fastmcp run yours.py:mcp --transport http`). Then come the
client recipes and the lessons; below MACHINERY, the rest.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.stderr.isatty():  # the imports take seconds: say so
    print("tasks_demo.py: importing fastmcp and docket…", file=sys.stderr, flush=True)

import asyncio  # noqa: E402  (and below: after that line on purpose)
import contextlib
import functools
import json
import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from docket import ConcurrencyLimit
from docket.dependencies import current_execution
from fastmcp import Context, FastMCP
from fastmcp.dependencies import CurrentContext
from fastmcp.exceptions import ToolError
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from fastmcp_tasks.context import get_task_context
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from redis.exceptions import RedisError

# Sent with every task as `pollIntervalMs`. At the library's 5 s a 3 s task is
# seen done at ~5 s; at 20 ms (the client's floor), ~20 ms late, for 50 tasks/get
# a second per waiting client. For hour-long tasks choose seconds.
POLL_INTERVAL = timedelta(milliseconds=20)
# `optional`: a task when the client asks for one, a plain call otherwise.
TASK = TaskConfig(mode="optional", poll_interval=POLL_INTERVAL)
CONCURRENCY = 10  # bodies one process runs at once; the rest wait, queued

# A task holds a worker slot while it runs: input limits are capacity limits.
MAX_SECONDS, MAX_STEPS = 3600, 1000
TIME_LIMIT = timedelta(seconds=MAX_SECONDS + 60)  # wall clock, whatever the inputs
# Bodies over this are refused (413) unread: parsed JSON takes tens of times its
# size (4 MiB of `{}`, the SDK's cap, is a million dicts). Ours need under 8 kB.
MAX_BODY = 16 * 1024
Seconds = Annotated[float, Field(description="how long it takes", ge=0, le=MAX_SECONDS,
                                 allow_inf_nan=False)]


class GuardedFastMCP(FastMCP):
    """FastMCP whose HTTP app, however it is served, refuses a body over MAX_BODY
    and a Host or Origin not its own (DNS rebinding: FastMCP leaves that check
    off). More host names: FASTMCP_HTTP_ALLOWED_HOSTS, or `allowed_hosts=`."""

    def http_app(self, *args: Any, **kwargs: Any) -> Any:
        # Strict, whatever comes: run_http_async passes FastMCP's default, False,
        # and "auto" checks Host only on a loopback address, not on 0.0.0.0.
        kwargs["host_origin_protection"] = True
        app = super().http_app(*args, **kwargs)
        app.add_middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY)
        return app


mcp = GuardedFastMCP("tasks-demo")
# Where tasks live: FASTMCP_DOCKET_URL, memory:// (the default: this process
# only) or redis://host:port/db, shared by every process on it. `name` is the
# queue: servers and workers with the same URL and name share their tasks.
# (On Redis, what to tune, as the demo's own servers do: docs/deployment.md.)
mcp.add_extension(TasksExtension(name="tasks-demo", concurrency=CONCURRENCY))


async def report(ctx: Context, progress: float, total: float | None, message: str) -> None:
    """Progress, best-effort: a status lost while the store blinks is no reason to fail."""
    with contextlib.suppress(RedisError):
        await ctx.report_progress(progress, total, message)


def task_body(tool: Callable) -> Callable:
    """What every tool's body runs inside: it announces itself (queued and running
    are both `working`: a body's first act is a status message, so a `working`
    task without one has not started), stops at TIME_LIMIT, and lets the first
    run's result stand (on Redis a task runs at least once). How: `run_once`,
    after the tools."""

    @functools.wraps(tool)
    async def body(*args: Any, **kwargs: Any) -> Any:
        return await run_once(tool, *args, **kwargs)

    return body


@mcp.tool(task=TASK)  # above task_body: the tool runs the wrapped function
@task_body
async def work(
    label: Annotated[str, Field(description="what to call this work", max_length=100)],
    seconds: Seconds,
    steps: Annotated[int, Field(description="equal steps, progress after each", ge=1,
                                le=MAX_STEPS)] = 5,
    ctx: Context = CurrentContext(),
) -> dict:
    """Work for `seconds` in equal `steps`, reporting progress after each."""
    started, reported = time.monotonic(), -math.inf
    for step in range(1, steps + 1):
        # To this step's deadline, not for a slice: reports cost ~2 ms each.
        await asyncio.sleep(started + step * seconds / steps - time.monotonic())
        # A client sees at most one status per poll: more reports are cost, and
        # on memory:// a flood of them delays a cancel (docs/any-client.md).
        if step == steps or time.monotonic() - reported >= 0.05:
            reported = time.monotonic()
            # tasks/get carries a status message, not numbers: say it in words.
            await report(ctx, step, steps, f"{label}: step {step}/{steps} "
                                           f"({100 * step // steps}%)")
    # `pid`: which process did the work; with workers, not the one that accepted it.
    return {"label": label, "seconds": seconds, "steps": steps, "pid": os.getpid()}


@mcp.tool  # no task=...: a plain tool is never run as a task
def uppercase(text: Annotated[str, Field(max_length=1000)]) -> str:
    """Answer at once: the text in capitals."""
    return text.upper()


@mcp.tool(task=TASK)
@task_body
async def fail(kind: Literal["bad_input", "bug", "backend_down"]) -> str:
    """Fail on purpose: as a tool would (bad_input, bug) or as a server would."""
    # A tool that raises anything ends `completed` with an isError answer, as a
    # plain call would; only an MCPError (the server failing) ends `failed`.
    if kind == "bad_input":
        raise ToolError("the input was rejected by the tool")
    if kind == "bug":
        raise ValueError("division by zero in step 3")
    raise MCPError(code=-32603, message="the storage backend is unreachable")


class Decision(BaseModel):
    model_config = ConfigDict(strict=True)  # `"approved": "no"` is no boolean
    approved: bool
    approver: str


@mcp.tool(task=TASK)
@task_body
async def approve(
    action: Annotated[str, Field(description="what to ask approval for", max_length=200)],
    ctx: Context = CurrentContext(),
) -> str | InputRequiredResult:
    """Ask the user to approve `action`, then report the decision."""
    # (The docstring is what clients see; this is how.) A task *returns* an
    # InputRequiredResult: it parks in `input_required`, holding no worker, and
    # once the client answers (tasks/update) runs again, the answers in
    # `ctx.input_responses`. A client on today's protocol gets the same from a
    # plain call, inline; only one on the older 2025-11-25 protocol keeps a
    # plain call's request open, which can carry `ctx.elicit()`.
    question = f"Approve {action!r}?"
    if not ctx.is_background_task and (
            ctx.request_context.protocol_version not in MODERN_PROTOCOL_VERSIONS):
        answer = await ctx.elicit(question, response_type=Decision)
        return decided(action, answer.action, answer.data if answer.action == "accept" else {})
    if ctx.input_responses is None:
        ask = ElicitRequestFormParams(message=question,
                                      requested_schema=Decision.model_json_schema())
        return InputRequiredResult(input_requests={"decision": ElicitRequest(params=ask)})
    answer = ctx.input_responses["decision"]
    return decided(action, answer.action, answer.content)


def decided(action: str, outcome: str, content: Any) -> str:
    """An answer is input like any other: anything but a well-formed yes is a no.
    (`outcome`: the client's accept, decline or cancel; `content`: its form.)"""
    try:
        decision = Decision.model_validate(content)
    except ValidationError:
        return f"{action}: declined"
    if outcome != "accept" or not decision.approved:
        return f"{action}: declined"
    return f"{action}: approved by {decision.approver}"


@mcp.tool(task=TASK)
@task_body
async def run_tests(
    suite: Annotated[str, Field(description="which suite", max_length=100)],
    tests: Annotated[int, Field(description="how many tests", ge=1, le=MAX_STEPS)] = 20,
    seconds: Seconds = 2.0,
    ctx: Context = CurrentContext(),
) -> dict:
    """Run a test suite (a mock: every seventh test fails), naming failures at once."""
    # tasks/get has no partial results: the status message names the failures.
    failed = []
    for i in range(1, tests + 1):
        await asyncio.sleep(seconds / tests)
        if i % 7 == 0:
            failed.append(f"test_{i}")
        await report(ctx, i, tests, f"{i}/{tests} run, {i - len(failed)} passed, "
                                    f"failed: {', '.join(failed) or 'none'}")
    return {"suite": suite, "passed": tests - len(failed), "failed": failed}


# Docket has no priorities; it has a cap per tool. At most BULK_SLOTS reindexes
# run at once (across every worker: the count is kept in the store), so with
# more slots than that `work` finds a free one at once, however many
# reindexes wait. (Or give bulk tools a queue and workers of their own.)
BULK_SLOTS = 2


@mcp.tool(task=TaskConfig(mode="required", poll_interval=POLL_INTERVAL))
@task_body
async def reindex(
    shard: Annotated[int, Field(description="which shard", ge=0, le=1000)],
    seconds: Seconds = 1.0,
    # Not an input (clients never see it): Docket holds the body until fewer
    # than BULK_SLOTS reindexes run, counted in the store.
    bulk: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=BULK_SLOTS),
) -> dict:
    """Reindex one shard: bulk work, always run in the background."""
    await asyncio.sleep(seconds)
    return {"shard": shard, "pid": os.getpid()}


# --------------------------------------------------------------------------
# How task_body keeps its promises. On Redis a task runs at least once: a
# worker that stops renewing its claim (killed, or only paused) has it run
# again elsewhere, and Docket keeps the last result written. So a run commits
# by SET NX under the task id, with the effect that goes with it (an outbox
# line; your email) in the same atomic step: once, whichever run is first.
# --------------------------------------------------------------------------
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


async def within_limit(body: Any) -> Any:
    """A slot is capacity: whatever its inputs, no body holds one past TIME_LIMIT."""
    try:
        return await asyncio.wait_for(body, TIME_LIMIT.total_seconds())
    except asyncio.TimeoutError:
        raise ToolError(f"stopped at its wall-clock limit, {TIME_LIMIT}") from None


# The first run to finish stores its result and posts to the outbox, atomically;
# any later run only reads the result that stands.
COMMIT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -10000, -1)
end
return redis.call('GET', KEYS[1])"""
AS_JSON = TypeAdapter(Any)


async def run_once(tool: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run `tool` as task_body promises, and return the result that stands."""
    task = get_task_context()
    if task is None:  # a plain call runs once, inside its request
        return await within_limit(tool(*args, **kwargs))
    # Docket's run: its store, shared by every worker, and its progress
    # (which ctx.report_progress writes), reached without a `ctx` argument.
    run = current_execution.get()
    key = run.docket.key(f"committed:{task.task_id}")
    if (first := await store_command(run, lambda redis: redis.get(key))) is not None:
        return json.loads(first)  # a run finished it already
    with contextlib.suppress(RedisError):  # best-effort, as in `report`
        await run.progress.set_message(f"running in process {os.getpid()}")
    try:
        result = await within_limit(tool(*args, **kwargs))
    except Exception:  # a late run that fails returns the standing result too
        if (first := await store_command(run, lambda redis: redis.get(key))) is not None:
            return json.loads(first)
        raise
    if isinstance(result, InputRequiredResult):
        return result  # a question, not an end: nothing to commit yet
    # Outlives the task's own keys (kept its TTL), so a late run still finds it.
    keep = str(int(2 * run.docket.execution_ttl.total_seconds()))
    as_json = json.dumps(AS_JSON.dump_python(result, mode="json"))  # models, dates...
    standing = await store_command(run, lambda redis: redis.eval(
        COMMIT, 2, key, run.docket.key("outbox"), as_json, keep,
        f"{task.task_id} completed by process {os.getpid()}"))
    return result if standing == as_json.encode() else json.loads(standing)  # another's


# END OF SERVER --------- copy everything above into your own file and it runs
# (`serve`, below, adds what a deployment wants: store errors named within a
# deadline, ids checked, slow clients bounded; docs/deployment.md.)

import re  # noqa: E402  (the lessons' own imports: the server above needs none of these)
from collections import OrderedDict, deque  # noqa: E402
from collections.abc import AsyncIterator, Awaitable  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from fastmcp import Client  # noqa: E402
from fastmcp.server.dependencies import get_access_token  # noqa: E402
from fastmcp.server.middleware import Middleware  # noqa: E402
from fastmcp.server.middleware.rate_limiting import RateLimitError, TokenBucketRateLimiter  # noqa: E402,E501
from fastmcp_tasks import ToolTask, call_tool_task  # noqa: E402
from fastmcp_tasks.client_models import ClientCreateTaskResult, ClientGetTaskResult  # noqa: E402
from fastmcp_tasks.client_models import GetTaskRequest, GetTaskRequestParams  # noqa: E402
from mcp_types import REQUEST_TIMEOUT  # noqa: E402

# ==========================================================================
# How the lessons watch the server
# ==========================================================================
# A client knows only what the protocol tells it. To check more (the body ran
# while nobody was connected, once, stopped when cancelled, never more than N
# at once), each lesson's server wraps every body in `journaled`: JOURNAL (a
# Journal, below MACHINERY) notes when it starts and how it ends. The lessons
# read it four ways: JOURNAL.of(id) → ["start", "done"] (or "cancelled",
# "raised"); .time(id, event); .most_at_once(ids); .end_of(id, timeout).
now = time.perf_counter  # the lessons' clock


def journaled(body: Callable) -> Callable:
    @functools.wraps(body)
    async def noted(*args: Any, **kwargs: Any) -> Any:
        task, end = get_task_context(), "raised"
        if task is None:  # a plain call: the lessons' evidence is about tasks
            return await body(*args, **kwargs)
        await JOURNAL.note(task.task_id, "start")
        try:
            result, end = await body(*args, **kwargs), "done"
            return result
        except asyncio.CancelledError:
            end = "cancelled"
            raise
        finally:
            await JOURNAL.note(task.task_id, end)

    return noted


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[FastMCP]:
    """A fresh server: `mcp`'s tools, each body journaled, on a queue of its own
    (`tasks_server`, below MACHINERY, takes `concurrency=` and `middleware=`),
    running on while clients come and go, as a deployed one does."""
    server = await tasks_server(**options)
    # In memory its lifespan (and Docket's worker) would end with the last
    # client; the lesson holds it open as the transport does: no public call.
    async with server._lifespan_manager():
        yield server


# ==========================================================================
# Client recipes worth pasting: attach by id, wait with a deadline, follow
# ==========================================================================

TERMINAL = frozenset({"completed", "failed", "cancelled"})


async def attach(client: Client, task_id: str, tool_name: str) -> ToolTask:
    """A handle on a task from its id alone. fastmcp has no such call, but a handle is
    (client, tool name, the task's record): tasks/get the record and build one. An
    unknown or expired id fails here with the server's "not found"."""
    request = GetTaskRequest(params=GetTaskRequestParams(task_id=task_id))
    record = await client.session.send_request(request, ClientGetTaskResult)
    created = ClientCreateTaskResult.model_validate(
        {**record.model_dump(by_alias=True, exclude={"result", "error", "input_requests"}),
         "resultType": "task"})
    return ToolTask(client, tool_name, created)


async def wait(task: ToolTask, timeout: float) -> ClientGetTaskResult:
    """task.wait(), raising TimeoutError however the deadline falls (when it falls
    inside a tasks/get, fastmcp raises that request's MCPError). The task runs on."""
    try:
        return await task.wait(timeout=timeout)
    except MCPError as error:
        if error.error.code != REQUEST_TIMEOUT:
            raise
        raise TimeoutError(f"task {task.task_id[:8]}… still running") from None


@dataclass
class Sample:
    """One tasks/get as a client saw it: sent and answered (seconds since t0)."""
    asked: float
    at: float
    state: str  # see state_of
    message: str | None


async def follow(task: ToolTask, t0: float, *, timeout: float = 300,
                 until: Callable[[ClientGetTaskResult], bool] = lambda status: False,
                 on_sample: Callable[[Sample], None] = lambda sample: None) -> list[Sample]:
    """Poll a task at its advertised interval until it ends, `until` holds, or `timeout`."""
    samples, deadline = [], now() + timeout
    while True:
        asked, status = now() - t0, await task.status()
        samples.append(Sample(asked, now() - t0, state_of(status), status.status_message))
        on_sample(samples[-1])
        if status.status in TERMINAL or until(status):
            return samples
        if now() > deadline:
            raise TimeoutError(f"task {task.task_id[:8]}… still {status.status}")
        await asyncio.sleep((status.poll_interval_ms or 1000) / 1000)


def state_of(status: ClientGetTaskResult) -> str:
    """`working (queued)`: working, and the body has not said a word yet."""
    queued = status.status == "working" and status.status_message is None
    return "working (queued)" if queued else status.status


def step_of(message: str | None) -> int:
    found = re.search(r"step (\d+)/", message or "")
    return int(found[1]) if found else 0


def past_step(step: int) -> Callable[[ClientGetTaskResult], bool]:
    return lambda status: step_of(status.status_message) >= step


def transitions(samples: list[Sample]) -> list[str]:
    """The states seen, in order, without repeats."""
    return [s.state for i, s in enumerate(samples) if i == 0 or samples[i - 1].state != s.state]


# ==========================================================================
# The lessons, in the order a learner meets them
# ==========================================================================
# Each is a short function named like its subcommand. Its docstring is the
# claim; it returns what it observed, including the checks that make the
# claim true or false for this run. `say` tells the terminal what it waits for.


@dataclass
class Observed:
    ideal: float  # seconds the work needs if nothing is wasted
    checks: dict[str, bool]  # the claim, broken into what was checked
    facts: dict[str, Any] = field(default_factory=dict)
    fixed: float = 0.0  # seconds of fixed costs on top (starting processes)


LESSONS: dict[str, Callable[..., Awaitable[Observed]]] = {}
LISTENERS: list[Callable[[str], None]] = []  # the terminal's live status, when it listens


def lesson(fn: Callable[..., Awaitable[Observed]]) -> Callable[..., Awaitable[Observed]]:
    """Register a lesson under its subcommand: `await_` → `await`."""
    LESSONS[fn.__name__.strip("_").replace("_", "-")] = fn
    return fn


def say(what: str) -> None:
    """What the lesson is doing now, for the terminal to show while it waits."""
    for listen in LISTENERS:
        listen(what)


async def room(client: Client, requests: int = 20) -> float:
    """How long `requests` requests take on this machine now (the slowest of three
    round trips after a first, times `requests`). A check that needs a body still
    running when the client acts makes the body at least this long: the check is
    then an order of events, and holds on a busy machine as on an idle one."""
    times = []
    for _ in range(4):
        start = now()
        await client.list_tools()
        times.append(now() - start)
    return requests * max(times[1:])  # (the first builds caches: slow on any machine)


@lesson
async def compare(scale: float) -> Observed:
    """3 s + 2 s + 1 s of work, sequential, gathered, as tasks: tasks add a lifecycle, not speed."""
    args = [{"label": label, "seconds": s * scale} for label, s in (("A", 3), ("B", 2), ("C", 1))]
    async with serving() as server:
        # A client that does not speak the tasks extension (here: the older
        # 2025-11-25 handshake) makes plain calls: optional-mode tools allow it.
        async with Client(server, mode="legacy") as plain, Client(server) as client:
            say("three plain calls, one after another")
            start = now()
            sequential = [(await plain.call_tool("work", a)).data for a in args]
            sequential_s, start = now() - start, now()
            say("the same three plain calls, gathered")
            gathered = [r.data for r in await asyncio.gather(
                *(plain.call_tool("work", a) for a in args))]
            gather_s, start = now() - start, now()
            say("the same three as tasks, gathered")
            tasks = await asyncio.gather(*(call_tool_task(client, "work", a) for a in args))
            background = [r.data for r in await asyncio.gather(*tasks)]
            tasks_s = now() - start
    ids = [t.task_id for t in tasks]
    longest = max(JOURNAL.time(i, "done") - JOURNAL.time(i, "start") for i in ids)
    expected = [{**a, "steps": 5, "pid": os.getpid()} for a in args]
    return Observed(
        ideal=(6 + 3 + 3) * scale,
        checks={"every way returned every result": sequential == gathered == background
                == expected,
                "gather and tasks both beat sequential": max(gather_s, tasks_s) < sequential_s,
                # What speed there is comes from running side by side, as gather does:
                "the three task bodies ran at once": JOURNAL.most_at_once(ids) == 3,
                "tasks took no less than their longest body": tasks_s >= longest},
        facts={"sequential_s": sequential_s, "gather_s": gather_s, "tasks_s": tasks_s,
               "tasks_over_gather": tasks_s / gather_s})


@lesson
async def await_(scale: float, count: int = 20) -> Observed:
    """A submitted task frees the client while it runs; `await task` is its result, once."""
    async with serving(concurrency=count) as server, Client(server) as client:
        seconds = max(2 * scale, await room(client))
        say(f"{count} tasks of {seconds:.2g} s, each call answered at once")
        tasks = [await call_tool_task(client, "work", {
            "label": f"T{i}", "seconds": seconds, "steps": 1}) for i in range(count)]
        other = (await client.call_tool("uppercase", {"text": "meanwhile"})).data
        answered = now()
        try:  # a bounded wait that is too short gives up; the task does not
            await wait(tasks[-1], timeout=seconds / 4)
            gave_up = None
        except TimeoutError:
            gave_up = now()
        after = await tasks[-1].status()
        results = [(await task).data for task in tasks]  # `await task`: its result
    ids = [t.task_id for t in tasks]
    return Observed(
        ideal=seconds,
        checks={"the client answered another call while bodies ran": other == "MEANWHILE"
                and answered < max(JOURNAL.time(i, "done") for i in ids),
                "a short wait gave up, the task worked on": gave_up is not None
                and JOURNAL.time(ids[-1], "done") > gave_up,
                "each result matches its call": [r["label"] for r in results]
                == [f"T{i}" for i in range(count)],
                "each body ran exactly once": all(JOURNAL.of(i) == ["start", "done"] for i in ids),
                "they ran side by side": JOURNAL.most_at_once(ids) > 1},
        # What the server tells every client about every task, and one result:
        facts={"poll_every_ms": after.poll_interval_ms, "result_kept_for_min":
               after.ttl_ms / 60_000, "first_result": results[0], "tasks": len(set(ids))})


@lesson
async def poll(scale: float, on_sample: Callable[[str, Sample], None] = lambda *_: None
               ) -> Observed:
    """Watch tasks live from tasks/get: their progress, and a suite's failures as they happen."""
    t0 = now()
    calls = {"A": ("work", {"label": "A", "seconds": 3 * scale}),
             "B": ("work", {"label": "B", "seconds": 2 * scale}),
             "suite": ("run_tests", {"suite": "checkout", "tests": 20, "seconds": 2 * scale})}
    async with serving() as server, Client(server) as client:
        tasks = {k: await call_tool_task(client, tool, args) for k, (tool, args) in calls.items()}
        histories = dict(zip(tasks, await asyncio.gather(*(  # each sample to the live table
            follow(task, t0, on_sample=functools.partial(on_sample, k))
            for k, task in tasks.items()))))
        suite = (await tasks["suite"].result()).data
    steps = {k: [step_of(s.message) for s in histories[k] if step_of(s.message)] for k in "AB"}
    # When each body ended, by the server's clock: a poll sees it a little later.
    ended = {label: JOURNAL.time(task.task_id, "done") - t0 for label, task in tasks.items()}
    failed = next((s for s in histories["suite"] if "failed: test_7" in (s.message or "")), None)
    return Observed(
        ideal=3 * scale,
        checks={"every task ended completed": all(h[-1].state == "completed"
                                                  for h in histories.values()),
                "progress was seen, only ever moving forwards": bool(steps["A"])
                and all(s == sorted(s) for s in steps.values()),
                # (the message is the server's own record of how far the suite was)
                "the suite's first failure was seen while it ran": failed is not None
                and int(failed.message.split("/")[0]) < 20},
        facts={"transitions": {k: transitions(h) for k, h in histories.items()},
               "steps_seen": {k: list(dict.fromkeys(v)) for k, v in steps.items()},
               "first_failure_seen": failed and f"{failed.message}, at {failed.at:.2f} s",
               "suite_report": suite,
               "ended_at_s": ended, "seen_ended_at_s": {k: h[-1].at for k, h in histories.items()}})


@lesson
async def reconnect(scale: float) -> Observed:
    """Close the client mid-task; later any client holding the id attaches: the work went on."""
    t0 = now()
    async with serving() as server:
        async with Client(server) as first:
            seconds = max(2 * scale, await room(first))
            task = await call_tool_task(first, "work", {"label": "R", "seconds": seconds,
                                                        "steps": 10})
            task_id = task.task_id  # the only thing we keep (or paste to a teammate)
            before = await follow(task, t0, until=past_step(2))
        closed_at = now()
        say("nobody is connected")
        await asyncio.sleep(seconds / 2)
        async with Client(server) as second, Client(server) as teammate:
            after = await follow(task := await attach(second, task_id, "work"), t0)
            mine = (await task.result()).data
            theirs = (await (await attach(teammate, task_id, "work")).result()).data
    # Where the work was when we left and when we came back (it may be done).
    left = step_of(before[-1].message)
    found = 10 if after[0].state == "completed" else step_of(after[0].message)
    return Observed(
        ideal=seconds,
        checks={"the body ran on, alone": JOURNAL.time(task_id, "start") < closed_at
                < JOURNAL.time(task_id, "done"),
                "progress moved on while nobody watched": found > left,
                "the new client, and a teammate's, got one result": mine == theirs
                and mine["label"] == "R",
                "the body ran once": JOURNAL.of(task_id) == ["start", "done"]},
        facts={"step_when_closing": left, "step_when_reopening": found,
               "last_seen_before_closing": before[-1].message,
               "first_seen_after_reopening": after[0].message or after[0].state})


@lesson
async def cancel(scale: float) -> Observed:
    """Cancel a running task: it reports cancelled, and its body stops."""
    t0 = now()
    async with serving() as server, Client(server) as client:
        seconds = max(2 * scale, await room(client))
        task = await call_tool_task(client, "work", {"label": "X", "seconds": seconds,
                                                     "steps": 10})
        await follow(task, t0, until=past_step(2))
        cancelled_at = now()
        await task.cancel()
        after = await follow(task, t0)
        # The body's own end, as the server saw it (give it a moment to land):
        ended = await JOURNAL.end_of(task.task_id, timeout=seconds + 2)
        try:
            raised = f"returned {await task.result()}"
        except ToolError as error:
            raised = f"raised: {error}"
    return Observed(
        ideal=seconds * 0.2,
        checks={"the task ended cancelled": after[-1].state == "cancelled",
                "the body was interrupted, not finished": ended == "cancelled"
                and JOURNAL.time(task.task_id, ended) >= cancelled_at,
                "result() raises": raised.startswith("raised")},
        facts={"body_ended": ended, "result": raised, "body_stopped_after_cancel_ms":
               (JOURNAL.time(task.task_id, ended) - cancelled_at) * 1000 if ended else None})


@lesson
async def failure(scale: float) -> Observed:
    """A tool error is an answer (completed, isError); only a protocol error ends failed."""
    outcomes = {}
    async with serving() as server, Client(server) as client:
        for kind in ("bad_input", "bug", "backend_down"):
            task = await call_tool_task(client, "fail", {"kind": kind}, raise_on_error=False)
            final = await wait(task, timeout=10)
            result, error = final.result or {}, final.error or {}
            outcomes[kind] = {"state": final.status, "is_error": bool(result.get("isError")),
                              "says": (result.get("content") or [{}])[0].get("text")
                              or error.get("message"), "code": error.get("code")}
    state = {kind: (o["state"], o["is_error"], o["code"]) for kind, o in outcomes.items()}
    return Observed(
        ideal=0.0,
        checks={"ToolError → completed, isError": state["bad_input"] == ("completed", True, None),
                "ValueError → completed, isError": state["bug"] == ("completed", True, None),
                "MCPError → failed, with its code": state["backend_down"] == ("failed", False,
                                                                               -32603)},
        facts=outcomes)


@lesson
async def input_(scale: float) -> Observed:
    """A task parks in input_required, the client answers, the task resumes with the answer."""
    asked: list[str] = []

    async def approver(message, response_type, params, context) -> dict:  # fastmcp's shape
        asked.append(message)
        say("a human decides")
        await asyncio.sleep(0.5 * scale)
        return {"approved": True, "approver": "dana"}

    t0 = now()
    async with serving() as server, Client(server, elicitation_handler=approver) as client:
        task = await call_tool_task(client, "approve", {"action": "deploy v2"})
        before = await follow(task, t0, until=lambda s: s.status == "input_required")
        result = await task.result()  # answers through the elicitation handler
        final = await task.status()
    return Observed(
        ideal=0.5 * scale,
        checks={"it parked in input_required": before[-1].state == "input_required",
                "the handler saw the question": asked == ["Approve 'deploy v2'?"],
                "it resumed with the answer": result.data == "deploy v2: approved by dana",
                "the body ran twice, once per leg":
                JOURNAL.of(task.task_id) == ["start", "done", "start", "done"]},
        facts={"seen_by_polling": transitions(before), "then": final.status,
               "result": result.data})


class SubmissionLimit(Middleware):
    """A token bucket per client on tools/call only (a poll is never refused). The key
    is the authenticated client, else the id a caller *declares* in `_meta`: that
    keeps honest clients from starving each other, not an attacker out. At most
    `clients` buckets (memory is bounded): the least recently seen drop."""

    def __init__(self, burst: int, per_second: float, clients: int = 10_000):
        self.burst, self.per_second, self.clients = burst, per_second, clients
        self.buckets: OrderedDict[str, TokenBucketRateLimiter] = OrderedDict()

    async def on_call_tool(self, context, call_next):
        token = get_access_token()
        who = token.client_id if token else context.fastmcp_context.client_id or "anonymous"
        bucket = self.buckets.pop(who, None) or TokenBucketRateLimiter(self.burst,
                                                                       self.per_second)
        self.buckets[who] = bucket  # now the most recently seen
        if len(self.buckets) > self.clients:
            self.buckets.popitem(last=False)
        if not await bucket.consume():
            raise RateLimitError(f"rate limit: {who} submits too fast")
        return await call_next(context)


@lesson
async def limits(scale: float) -> Observed:
    """At most 2 bodies run at once, the rest wait queued; a client that floods is refused."""
    slots, accepted, refused, t0 = 2, {}, [], now()
    # Refill is negligible over the burst, so exactly 4 calls get in.
    limit = SubmissionLimit(burst=4, per_second=0.01)
    async with serving(concurrency=slots, middleware=(limit,)) as server, Client(server) as client:
        seconds = max(0.5 * scale, await room(client))
        say("alice submits 3 tasks, bob 6")
        for label in [f"alice-{i}" for i in range(3)] + [f"bob-{i}" for i in range(6)]:
            try:  # no auth here: the key is the client id each one declares
                accepted[label] = await call_tool_task(client, "work", {
                    "label": label, "seconds": seconds, "steps": 1},
                    meta={"client_id": label.split("-")[0]})
            except MCPError as error:
                refused.append(f"{label}: {error}")
        histories = await asyncio.gather(*(follow(t, t0) for t in accepted.values()))
    ids = [t.task_id for t in accepted.values()]
    first_end = min(JOURNAL.time(i, "done") for i in ids)
    queued = [(s, i) for h, i in zip(histories, ids) for s in h if s.state == "working (queued)"]
    return Observed(
        ideal=math.ceil(len(ids) / slots) * seconds,
        checks={"never more than 2 ran at once": JOURNAL.most_at_once(ids) == slots,
                "the rest started only as others ended":
                sum(JOURNAL.time(i, "start") >= first_end for i in ids) == len(ids) - slots,
                "seen queued ⇒ truly not started": bool(queued) and all(
                    t0 + s.asked < JOURNAL.time(i, "start") for s, i in queued),
                "bob was cut off after 4": [r.split(":")[0] for r in refused]
                == ["bob-4", "bob-5"],
                "every accepted task completed": all(h[-1].state == "completed"
                                                     for h in histories)},
        facts={"accepted": list(accepted), "refused": refused,
               "polls_that_saw_queued": len(queued),
               "started_at_s": sorted(JOURNAL.time(i, "start") - t0 for i in ids)})


@lesson
async def priority(scale: float, bulk: int = 6) -> Observed:
    """Bulk work capped below the slots: interactive work overtakes the bulk queue."""
    t0 = now()
    async with serving(concurrency=BULK_SLOTS + 1) as server, Client(server) as client:
        seconds = max(1 * scale, await room(client))
        say(f"{bulk} reindex tasks on {BULK_SLOTS + 1} slots, then one `work`")
        shards = [await call_tool_task(client, "reindex", {"shard": i, "seconds": seconds})
                  for i in range(bulk)]
        # Once bulk work runs (its first body has spoken), the interactive call:
        await follow(shards[0], t0, until=lambda status: status.status_message is not None)
        asked = now()
        urgent = await call_tool_task(client, "work", {"label": "urgent", "seconds": 0,
                                                       "steps": 1})
        await urgent
        await asyncio.gather(*shards)
    ids, started = [t.task_id for t in shards], JOURNAL.time(urgent.task_id, "start")
    return Observed(
        ideal=math.ceil(bulk / BULK_SLOTS) * seconds,
        checks={f"bulk never held more than {BULK_SLOTS} slots":
                JOURNAL.most_at_once(ids) == BULK_SLOTS,
                "the interactive task overtook bulk tasks queued before it":
                started < max(JOURNAL.time(i, "start") for i in ids),
                "every bulk task completed": all(JOURNAL.of(i) == ["start", "done"] for i in ids)},
        facts={"urgent_waited_ms": (started - asked) * 1000,
               "bulk_started_at_s": sorted(JOURNAL.time(i, "start") - t0 for i in ids),
               "bulk_ended_at_s": sorted(JOURNAL.time(i, "done") - t0 for i in ids)})


# ==========================================================================
# MACHINERY — you can stop reading here: every lesson is above. Below are
# printing, the command line, the stories that start processes (serve,
# worker, Redis, HAProxy), and the bench.
# ==========================================================================


import argparse  # noqa: E402  (the machinery's imports live with the machinery)
import base64  # noqa: E402
import secrets  # noqa: E402
import difflib  # noqa: E402
import signal  # noqa: E402
import http.client  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import h11  # noqa: E402
import httpx2  # noqa: E402
import uvicorn  # noqa: E402
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier  # noqa: E402
from fastmcp.tools.function_tool import FunctionTool  # noqa: E402
from fastmcp.utilities.tasks import TASKS_EXTENSION_ID  # noqa: E402
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS  # noqa: E402
from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402
from redis.exceptions import OutOfMemoryError  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402
from rich.progress_bar import ProgressBar  # noqa: E402
from rich.spinner import Spinner  # noqa: E402
from rich.table import Table  # noqa: E402

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
CHILDREN: list[subprocess.Popen] = []  # processes a story started: none may outlive it
FOLDERS: list[str] = []  # and the temporary folders they used
@dataclass
class Journal:
    """Each task body's events, the last 10,000: (time, task id, event), the event
    "start", then "done", "cancelled" or "raised" (see `journaled`)."""
    events: deque = field(default_factory=lambda: deque(maxlen=10_000))

    async def note(self, key: str, event: str) -> None:  # async: RedisJournal's is
        self.events.append((now(), key, event))

    def of(self, key: str) -> list[str]:
        return [event for _, k, event in self.events if k == key]

    def time(self, key: str, event: str) -> float:
        return next(at for at, k, e in self.events if k == key and e == event)

    async def end_of(self, key: str, timeout: float) -> str | None:
        deadline = now() + timeout
        while not (ended := [e for e in self.of(key) if e != "start"]) and now() < deadline:
            await asyncio.sleep(0.005)
        return ended[-1] if ended else None

    def most_at_once(self, keys: list[str]) -> int:
        running = peak = 0
        for _, _, event in sorted(e for e in self.events if e[1] in keys):
            running += 1 if event == "start" else -1
            peak = max(peak, running)
        return peak


JOURNAL = Journal()


# On Redis, a task whose worker stops renewing its claim (it died, or only froze)
# runs again elsewhere after this long: Docket's 5 minutes would hide it from
# the stories, and a worker killed mid-task costs a client 5 s, not 5 minutes.
REDELIVERY_TIMEOUT = timedelta(seconds=5)


# How long a worker with every slot busy waits to look for work again: on Redis
# 10 ms costs nothing; in memory less than fastmcp-tasks' 50 ms costs an idle
# server CPU (figures: docs/performance.md).
def check_interval(backend: str) -> timedelta:
    return timedelta(milliseconds=50 if backend.lower().startswith("memory") else 10)



async def tasks_server(*, backend: str = "memory://", queue: str | None = None,
                       concurrency: int = CONCURRENCY, middleware: tuple = (),
                       auth: Any = None) -> FastMCP:
    """The tools of `mcp`, journaled, on a server with its own queue (servers on one
    backend and queue share their tasks) running `concurrency` bodies at once."""
    # TaskRequests and with_schema_lookup, below: what `serve` adds too.
    server = GuardedFastMCP("tasks-demo", auth=auth, middleware=[TaskRequests(), *middleware])
    server.add_extension(TasksExtension(
        url=backend, name=queue or f"lesson-{secrets.token_hex(4)}",
        concurrency=concurrency, redelivery_timeout=REDELIVERY_TIMEOUT,
        minimum_check_interval=check_interval(backend)))
    for tool in await mcp.list_tools(run_middleware=False):
        if isinstance(tool, FunctionTool) and hasattr(tool.fn, "__wrapped__"):
            # Journaled inside task_body: a run that finds its result standing
            # (a rerun on Redis) does not count as a run.
            tool = tool.model_copy(update={"fn": task_body(journaled(tool.fn.__wrapped__))})
        server.add_tool(tool)
    with_schema_lookup(server)
    return server


class DemoError(Exception):
    """Something to report in one line, without a traceback."""


LEAVE_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill`, terminal closed


def leave_now(signum: int = signal.SIGINT, *_: Any) -> None:
    """Ctrl-C where nothing is worth waiting for: exit 128+N, taking the children
    and their folders along (a killed parent's children would run on)."""
    for child in CHILDREN:
        child.kill()
    for folder in FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[?25h")  # show the cursor a live dashboard hid
    sys.stderr.write("\ninterrupted\n")
    os._exit(128 + signum)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FIRST_PRESS: list[float] = []


def same_press() -> bool:
    """True for a signal within half a second of the first: the same Ctrl-C.

    Under `uv run`, one Ctrl-C arrives twice: the terminal signals the whole
    process group, and uv forwards what it got to its child too.
    """
    FIRST_PRESS[:] = FIRST_PRESS or [time.monotonic()]
    return time.monotonic() - FIRST_PRESS[0] < 0.5


class HttpServer(uvicorn.Server):
    """uvicorn, leaving signals to the caller (`stop_on_signals`, `leave_now`):
    its own handler restores the previous one on the way out and raises the
    signal again, and a draining `serve` then never ended."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


SEND_WITHIN = 10.0  # seconds a client has to send a whole request, from its start
MAX_CONNECTIONS = 1000  # open at once, idle ones included
MAX_HEADERS = 16 * 1024  # bytes of request line and headers (every header goes into a task)


class HeaderCap:
    """431 for a request whose line and headers exceed MAX_HEADERS. (uvicorn's
    h11 limit bounds only headers that arrive in pieces: a 60 KB block in one
    read passed it.)"""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and len(scope.get("raw_path", b"")) + sum(
                len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADERS:
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-length", b"0"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def guarded_h11(seconds: float) -> type:
    """uvicorn's HTTP/1.1 protocol, with a deadline for a whole request.

    uvicorn arms its one timer (keep-alive) only after a response, and any byte
    cancels it: a connection that sends nothing, or a byte a second, stays open
    for ever. This one closes it unless the request (headers and body) is in
    `seconds` after the connection opened, or after the first byte of a later
    request on it: with a 408 if it sent part of one.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        timer: asyncio.TimerHandle | None = None
        started = False

        def arm(self) -> None:
            self.disarm()
            self.started, self.timer = False, self.loop.call_later(seconds, self.too_slow)

        def disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.timer is None and self.conn.their_state is h11.IDLE:
                self.arm()  # a later request on a kept-alive connection
            self.started = self.started or bool(data)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.their_state is not \
                    h11.SEND_BODY:  # the whole request is in
                self.disarm()

        def too_slow(self) -> None:
            self.timer = None
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE,
                                                                              h11.SEND_BODY):
                return
            if self.started:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n"
                                     b"content-length: 0\r\n\r\n")
            self.transport.close()

    return HeaderDeadline


@asynccontextmanager
async def on_http(server: FastMCP, port: int | None = None, host: str = "127.0.0.1",
                  names: tuple = ()) -> AsyncIterator[str]:
    """Serve `server` over streamable HTTP; yield its URL.

    Host/Origin protection on: a request whose Host is not this server's
    (127.0.0.1, localhost, ::1, `host`, or one of `names`: the names clients
    and balancers reach it by), or that comes from a web page of another
    origin, is refused (421, 403). Without it a page in the user's browser
    could drive a local server through DNS rebinding.
    """
    port = port or free_port()
    extra = [*names, *([] if is_loopback(host) else [host])]
    app = server.http_app(host_origin_protection=True, allowed_hosts=extra or None)
    # Idle and slow clients are bounded: a whole request within SEND_WITHIN, its
    # headers to MAX_HEADERS, 5 s idle between requests, and past MAX_CONNECTIONS
    # open at once, new requests get 503 until some close.
    web = HttpServer(uvicorn.Config(HeaderCap(app), host=host, port=port, log_level="warning",
                                    timeout_graceful_shutdown=2, http=guarded_h11(SEND_WITHIN),
                                    timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS,
                                    h11_max_incomplete_event_size=MAX_HEADERS))
    running = asyncio.create_task(web.serve())
    while not web.started:
        if running.done():
            await running  # raises what stopped it
            raise DemoError(f"the HTTP server on {host}:{port} stopped at once")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/mcp"
    finally:
        web.should_exit = True
        await running


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# --------------------------------------------------------------------------
# Past one process: serve, worker, and `task ...` commands
# --------------------------------------------------------------------------
# The same tools over streamable HTTP. With memory:// its tasks outlive
# clients but not the server process; with Redis they outlive the server
# too, and worker processes can run them.


def http_status(url: str, token: str | None) -> int:
    """Ask the server once more, over plain HTTP, how it answers this token.

    The MCP client reports every HTTP error as "Server returned an error
    response"; the status code is what tells a bad token from a broken server.
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@asynccontextmanager
async def remote(url: str, token: str | None, timeout: float = 30) -> AsyncIterator[Client]:
    """A client of a server in another process, whose failures read as one line.

    No request waits longer than `timeout` for its answer. (An answer that is
    late becomes an event stream with a ping every 15 s, which keeps any read
    timeout from firing: this deadline is on the answer itself.)
    """
    try:
        async with Client(url, auth=token, timeout=timeout) as client:
            yield client
    except MCPError as error:
        if error.error.code == REQUEST_TIMEOUT:
            raise DemoError(f"{url} did not answer within {timeout:.0f} s") from None
        if "not found" in str(error):
            raise DemoError(f"{error}: the id is unknown, expired (results are kept "
                            "15 minutes) or another tenant's; check it and --token") from None
        status = await asyncio.to_thread(http_status, url, token)
        if status in (401, 403):
            raise DemoError(f"{url} refused the token (HTTP {status}): check --token") from None
        raise DemoError(f"{url}: {error}") from None
    except (OSError, RuntimeError, httpx2.TransportError) as error:
        if isinstance(error, RuntimeError) and "failed to connect" not in str(error):
            raise
        raise DemoError(f"cannot reach {url} ({error or type(error).__name__}): is "
                        "`tasks_demo.py serve` running there? check --url") from None


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


class TaskRequests(Middleware):
    """Bound and name what the task store does to a request (`serve`, the lessons)."""

    async def on_request(self, context: Any, call_next: Callable) -> Any:
        params = context.message if isinstance(context.message, dict) else {}
        task_id = params.get("taskId")
        if task_id is not None and not re.fullmatch(r"[\w-]{1,100}", str(task_id), re.ASCII):
            # Not an id this server would issue: no store lookup, the usual answer.
            shown = str(task_id)[:50].encode("ascii", "backslashreplace").decode()
            raise MCPError(code=INVALID_PARAMS, message=f"Task {shown} not found")
        ctx = context.fastmcp_context
        bounded = context.method.startswith("tasks/") or ctx is not None and (
            ctx.client_extension_settings(TASKS_EXTENSION_ID) is not None)
        try:
            if not bounded:
                return await call_next(context)
            return await asyncio.wait_for(call_next(context), STORE_DEADLINE)
        except asyncio.TimeoutError:
            raise MCPError(code=INTERNAL_ERROR, message="task store unavailable: no answer "
                           f"within {STORE_DEADLINE:.0f} s (is Redis frozen?)") from None
        except RedisError as error:  # the details (an address, say) stay in the server's log
            logging.getLogger("tasks_demo").warning("task store: %r", error)
            why = ("is full (maxmemory)" if isinstance(error, OutOfMemoryError) else
                   "is unreachable" if isinstance(error, RedisConnectionError) else
                   f"failed ({type(error).__name__})")
            raise MCPError(code=INTERNAL_ERROR,
                           message=f"task store unavailable: Redis {why}") from None


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


async def serve(port: int, host: str, backend: str, worker: bool,
                tokens: dict[str, str], names: tuple = ()) -> None:
    """Serve the tools over streamable HTTP until stopped."""
    on_redis = shared(backend)
    if on_redis:
        await require_redis(backend)
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
                                concurrency=CONCURRENCY if worker else 0)
    model_in_place(server)
    stop = asyncio.Event()
    # In memory the tasks die with the process: nothing to drain, so leave.
    stop_on_signals(stop, drain=on_redis)
    async with on_http(server, port, host, names=names) as url:
        print(f"serving {url} pid={os.getpid()} backend={backend} "
              f"worker={'yes' if worker else 'no'} auth={'tokens' if tokens else 'none'}",
              flush=True)
        await stop.wait()
    print("drained", flush=True)


async def worker(backend: str, journal: bool, metrics: tuple[str, int] | None = None,
                 health: tuple[str, int] | None = None) -> None:
    """Run tasks from a shared Redis, whichever server accepted them.

    The same as fastmcp-tasks' own worker on the module-level `mcp`:
    FASTMCP_DOCKET_URL=redis://... python -m fastmcp_tasks.worker_cli worker tasks_demo.py:mcp
    plus Docket's Prometheus metrics and a health endpoint, when asked for.
    """
    from docket.instrumentation import healthcheck_server, metrics_server

    await require_redis(backend)
    await same_key_as_the_queue(backend)
    renewing = asyncio.create_task(renewing_the_key_probe(backend))  # noqa: F841 (held)
    if journal:  # the soak counts every body's runs, across processes, in Redis
        global JOURNAL
        JOURNAL = RedisJournal(backend)
    server = await tasks_server(backend=pooled(backend), queue=QUEUE)
    model_in_place(server)
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
        async with server._lifespan_manager():  # the lifespan runs the Docket worker
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


REQUEST_DEADLINE = 30.0  # seconds a `task` command waits for any one answer


async def through_outages(read: Callable[[], Awaitable[Any]]) -> Any:
    """Reading a task is safe to repeat: while its store is away (a Redis restart,
    a freeze), say so and read again, for as long as the command's --timeout."""
    while True:
        try:
            return await read()
        except MCPError as error:
            if not str(error).startswith("task store unavailable"):
                raise
            print(f"{error}: reading again", file=sys.stderr, flush=True)
            await asyncio.sleep(1)


async def deadline(command: Callable[[argparse.Namespace], Awaitable[str]],
                   args: argparse.Namespace) -> str:
    """Every `task` command ends by a deadline; one that follows a task, as long
    as a task may run. (And no single request waits over REQUEST_DEADLINE.)"""
    following = args.action in ("watch", "result", "load") or getattr(args, "wait", False)
    args.timeout = args.timeout or (TIME_LIMIT.total_seconds() + 60 if following else 30)
    try:
        return await asyncio.wait_for(command(args), args.timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise DemoError(f"{args.action}: no answer within {args.timeout:.0f} s "
                        "(--timeout)") from None


async def task_command(args: argparse.Namespace) -> str:
    """`task submit|status|watch|result|cancel`: what to print last."""
    if getattr(args, "task_id", None) == "-":
        args.task_id = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if not args.task_id:
            raise DemoError("no task id came on stdin (did the command before | fail?)")
    if args.action == "load":
        return json.dumps(await load(args.url, args.count, args.seconds, args.over, args.poll,
                                     args.token))
    async with remote(args.url, args.token, min(args.timeout, REQUEST_DEADLINE)) as client:
        if args.action == "submit":
            job = {"label": args.label, "seconds": args.seconds, "steps": args.steps}
            task = await call_tool_task(client, "work", job)
            if not args.wait:
                return task.task_id
            print(task.task_id, flush=True)  # first, so that the id is never lost
        else:
            task = await attach(client, args.task_id, "work")
        if args.action == "status":
            status = await task.status()
            return f"{state_of(status)} {status.status_message or ''}".strip()
        if args.action == "cancel":
            await task.cancel()
            return state_of(await task.status())
        if args.action in ("watch", "submit"):
            seen = []

            def show_change(sample: Sample) -> None:  # a line per change, not per poll
                if (sample.state, sample.message) not in seen[-1:]:
                    seen.append((sample.state, sample.message))
                    print(f"{sample.at:6.2f} s  {sample.state:16}  {sample.message or ''}",
                          flush=True)
            t0 = now()
            states = " → ".join(transitions(await through_outages(lambda: follow(
                task, t0, on_sample=show_change, timeout=args.timeout))))
            if args.action == "watch":
                return states
        final = await through_outages(lambda: wait(task, timeout=args.timeout))
        if final.status != "completed":
            why = final.status_message or (final.error or {}).get("message")
            raise DemoError(f"task {task.task_id} ended {final.status}: "
                            f"{why or 'the server gave no reason'}")
        return json.dumps(final.result.get("structuredContent") or final.result["content"])


# --------------------------------------------------------------------------
# The stories: this program starts the processes, talks to them as a
# client, and kills every one at the end, on failure or on Ctrl-C.
# --------------------------------------------------------------------------

STORIES: dict[str, Callable[..., Awaitable[Observed]]] = {}


def story(fn: Callable[..., Awaitable[Observed]]) -> Callable[..., Awaitable[Observed]]:
    STORIES[fn.__name__] = fn
    return fn


class Child:
    """A process a story started: its output collected, its end guaranteed."""

    def __init__(self, name: str, *command: str, own_group: bool = False):
        self.name, self.lines = name, []
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=own_group)
        CHILDREN.append(self.process)
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    @classmethod
    def demo(cls, name: str, *args: str) -> Child:
        return cls(name, sys.executable, os.path.abspath(__file__), *args)

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    async def expect(self, text: str, timeout: float = 30) -> str:
        deadline = now() + timeout
        while now() < deadline:
            exited = self.process.poll() is not None
            if exited:
                await asyncio.to_thread(self._reader.join)  # read what it left
            for line in self.lines:
                if text in line:
                    return line
            if exited:
                raise DemoError(f"{self.name} exited: {' / '.join(self.lines[-3:])}")
            await asyncio.sleep(0.02)
        raise DemoError(f"{self.name} did not print {text!r} within {timeout:.0f} s")

    async def first_line(self, timeout: float = 30) -> str:
        return await self.expect("", timeout)

    async def finish(self, timeout: float = 60) -> str:
        """Wait for the process to exit; its last line, or an error."""
        code = await asyncio.to_thread(self.process.wait, timeout)
        await asyncio.to_thread(self._reader.join)  # every line read, to the end
        if code != 0:
            raise DemoError(f"{self.name} failed: {' / '.join(self.lines[-3:])}")
        return self.lines[-1] if self.lines else ""

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def client_process(name: str, *args: str) -> Child:
    """Run one `task ...` command in a process of its own, to its end."""
    return await client_process_of(name, "task", *args)


async def client_process_of(name: str, *args: str) -> Child:
    """Run one command of this script in a process of its own, to its end."""
    child = Child.demo(name, *args)
    await child.finish()
    return child


def scrape(metrics_port: int, health_port: int) -> tuple[float, str]:
    """A worker's Prometheus metrics (tasks it completed) and its health answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        completed = sum(float(line.split()[-1]) for line in page.read().decode().splitlines()
                        if line.startswith("docket_tasks_completed_total{"))
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/", timeout=5) as page:
        return completed, page.read().decode()


@asynccontextmanager
async def child_processes() -> AsyncIterator[None]:
    try:
        yield
    finally:
        for child in CHILDREN:
            child.kill()
        for child in CHILDREN:
            child.wait()
        CHILDREN.clear()
        for folder in FOLDERS:
            shutil.rmtree(folder, ignore_errors=True)
        FOLDERS.clear()


def redis_process(port: int, persistent: bool, folder: str) -> Child:
    """redis-server on loopback; `persistent`: an append-only file survives a restart."""
    if shutil.which("redis-server") is None:
        raise DemoError("this story needs Redis: install the redis-server package "
                        "(apt-get install redis-server, brew install redis)")
    return Child("redis", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", folder, "--save", "", "--appendonly", "yes" if persistent else "no")


async def start_redis(persistent: bool = False) -> str:
    port, folder = free_port(), tempfile.mkdtemp(prefix="tasks-demo-redis-")
    FOLDERS.append(folder)
    redis = redis_process(port, persistent, folder)
    await redis.expect("Ready to accept connections")
    return f"redis://127.0.0.1:{port}/0"


async def start_server(*args: str, port: int | None = None) -> tuple[Child, str]:
    """Start `serve` in a process of its own; return once it accepts connections."""
    port = port or free_port()
    server = Child.demo(f"server :{port}", "serve", "--port", str(port), *args)
    return server, (await server.expect("serving http")).split()[1]


@story
async def crash(scale: float) -> Observed:
    """SIGKILL the waiting client's process: the work goes on, once; a new process gets it."""
    t0 = now()
    async with serving() as server, on_http(server) as url, child_processes():
        async with Client(server) as local:  # a slow machine gets a longer body
            seconds = max(3 * scale, await room(local, requests=100))
        # Two real client processes over HTTP. The first submits and waits,
        # printing progress, and the task id first, as a careful client writes
        # it down. The second starts now too, and waits to be given that id.
        say("starting two client processes (each imports fastmcp: seconds)")
        victim = Child.demo("client", "task", "submit", "--wait", "--url", url,
                            "--label", "K", "--seconds", str(seconds), "--steps", "10")
        survivor = Child.demo("new client", "task", "result", "--url", url, "-")
        task_id = await victim.first_line()
        started = now() - t0  # what the processes cost before any work began
        say("the client waits; at step 1 it is killed")
        await victim.expect(" step ")  # mid-wait, and the work mid-run
        victim.kill()  # SIGKILL: no goodbye, no tasks/cancel, no closed connection
        killed_at = now()
        survivor.send(task_id)
        say("a new process, given only the id, waits for the result")
        await survivor.finish()
    result = json.loads(survivor.lines[-1])
    return Observed(
        ideal=seconds, fixed=started,
        checks={"the client process died of SIGKILL":
                victim.process.returncode == -signal.SIGKILL,
                "it died while the body ran": JOURNAL.time(task_id, "start") < killed_at
                < JOURNAL.time(task_id, "done"),
                "a new process got the result": result["label"] == "K",
                "the body ran exactly once": JOURNAL.of(task_id) == ["start", "done"]},
        facts={"task_id": task_id, "victim_last_said": victim.lines[-1],
               "survivor_said": survivor.lines[-1]})


@story
async def tenants(scale: float, worker_key: str | None = None,
                  encrypted: bool = True) -> Observed:
    """Bearer tokens on Redis: a task is found by its owner only; no token sits in Redis in clear."""
    alice, bob = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    async with child_processes():
        backend, folder = await start_redis(), tempfile.mkdtemp(prefix="tasks-demo-key-")
        FOLDERS.append(folder)
        keys = {"server": secrets.token_urlsafe(32), "worker": worker_key}
        keys["worker"] = keys["worker"] or keys["server"]  # the same key, unless told otherwise
        for holder, key in keys.items():
            Path(folder, holder).write_text(key)
        key_of = {h: ["--key-file", str(Path(folder, h))] if encrypted else [] for h in keys}
        Child.demo("worker", "worker", "--backend", backend, *key_of["worker"])
        server, url = await start_server(
            "--backend", backend, "--no-worker", "--token", f"alice={alice}", "--token",
            f"bob={bob}", *(key_of["server"] if encrypted else ["--plaintext-snapshots"]))
        submit = await client_process("alice submits", "submit", "--url", url, f"--token={alice}",
                                      "--seconds", str(1 * scale), "--label", "alice-report")
        task_id = submit.lines[-1]

        async def fetch(who: str, token: str | None) -> str:
            # `--token=` and `--`: a token or an id may begin with "-".
            args = ["result", "--url", url] + ([f"--token={token}"] if token else []) + [
                "--", task_id]
            child = Child.demo(f"{who} fetches", "task", *args)
            try:
                return "found: " + await child.finish()
            except DemoError:
                return "refused: " + child.lines[-1]

        people = {"alice": alice, "bob": bob, "no token": None}
        views = dict(zip(people, await asyncio.gather(*(fetch(*p) for p in people.items()))))
        in_clear = await keys_holding(backend, alice)
    return Observed(
        ideal=1 * scale,
        checks={"alice, from another process, got her result":
                views["alice"].startswith("found") and "alice-report" in views["alice"],
                "bob was told it does not exist": "not found" in views["bob"],
                "no token, no entry": "refused the token" in views["no token"],
                "alice's token is nowhere in Redis in clear": not in_clear},
        facts={"task_id": task_id, **{f"{who}_sees": v for who, v in views.items()},
               "redis_keys_holding_alices_token": in_clear,
               # Without auth anyone holding the id can read and cancel the
               # task, so it must be unguessable: fastmcp-tasks draws 32 random bytes.
               "id_length_bits": 8 * len(base64.urlsafe_b64decode(task_id + "=="))})


async def keys_holding(backend: str, secret: str) -> list[str]:
    """Every Redis key whose value contains `secret`, whatever the key's type."""
    from redis.asyncio import Redis

    redis, found = Redis.from_url(backend), []
    readers = {b"string": lambda k: redis.get(k), b"hash": lambda k: redis.hgetall(k),
               b"list": lambda k: redis.lrange(k, 0, -1), b"set": lambda k: redis.smembers(k),
               b"zset": lambda k: redis.zrange(k, 0, -1), b"stream": lambda k: redis.xrange(k)}
    async for key in redis.scan_iter():
        value = await readers.get(await redis.type(key), lambda k: asyncio.sleep(0, ""))(key)
        if secret.encode() in repr(value).encode() or secret in repr(value):
            found.append(key.decode())
    await redis.aclose()
    return sorted(found)


@story
async def restart(scale: float) -> Observed:
    """Redis: SIGKILL the server mid-task, start it again: the task still finishes."""
    seconds, t0 = 6 * scale, now()
    async with child_processes():
        backend = await start_redis()
        port = free_port()
        first, url = await start_server("--backend", backend, port=port)
        async with remote(url, None) as client:
            task = await call_tool_task(client, "work", {"label": "R", "seconds": seconds,
                                                         "steps": 12})
            task_id = task.task_id
            await follow(task, t0, until=past_step(3))
        first.kill()  # SIGKILL: no shutdown, no goodbye, the task is mid-run
        killed_at = now() - t0
        second, _ = await start_server("--backend", backend, port=port)  # same address
        async with remote(url, None) as client:
            task = await attach(client, task_id, "work")
            samples = await follow(task, t0)
            result = (await task.result()).data
            again = (await task.result()).data
    rerun = next((s.at for s in samples if s.message and s.message.startswith("running")),
                 math.nan)  # NaN: never seen starting again
    return Observed(
        ideal=seconds,
        checks={"the task completed": samples[-1].state == "completed",
                "its result is the work's": result["label"] == "R"
                and result["seconds"] == seconds,
                "the new server ran it again, from the top": result["pid"] == second.process.pid
                and not math.isnan(rerun),  # it said `running` anew after the kill
                "the same result when fetched again": result == again},
        facts={"task_id": task_id, "killed_at_s": killed_at,
               "run_again_after_s": rerun - killed_at,
               "redelivery_timeout_s": REDELIVERY_TIMEOUT.total_seconds(),
               "after_restart": transitions(samples), "result": result})


@story
async def distributed(scale: float) -> Observed:
    """Redis, a submit-only server, two workers, a process per client step; what an operator sees."""
    seconds, ports = 8 * scale, [(free_port(), free_port()) for _ in (1, 2)]
    async with child_processes():
        backend = await start_redis()
        workers = [Child.demo(f"worker {i}", "worker", "--backend", backend, "--metrics-port",
                              str(metrics), "--health-port", str(health))
                   for i, (metrics, health) in enumerate(ports, 1)]
        server, url = await start_server("--backend", backend, "--no-worker")
        # The watcher starts now and waits for the id on stdin, like the right
        # side of `task submit | task watch -`: a process takes seconds to
        # start, and the work should not be over before it is watched.
        watch = Child.demo("watch", "task", "watch", "--url", url, "-")
        for w in workers:
            await w.expect("worker pid=")
        submit = Child.demo("submit", "task", "submit", "--url", url, "--label", "build",
                            "--seconds", str(seconds), "--steps", "8")
        submit_doomed = Child.demo("submit doomed", "task", "submit", "--url", url,
                                   "--label", "doomed", "--seconds", str(seconds * 10))
        watch.send(task_id := await submit.finish())  # the moment it is known
        to_cancel = await submit_doomed.finish()
        say("the operator's view: what runs where (tasks_demo.py queue)")
        queued = await client_process_of("queue", "queue", "--backend", backend)
        running = next((line for line in queued.lines if to_cancel[:20] in line), "")
        cancel = await client_process("cancel", "cancel", "--url", url, "--", to_cancel)
        await watch.finish()
        fetched = await asyncio.gather(*(client_process(f"result {i}", "result", "--url", url,
                                                        "--", task_id) for i in (1, 2)))
        # Docket's own metrics, from each worker: how many tasks it completed.
        scraped = await asyncio.gather(*(asyncio.to_thread(scrape, m, h) for m, h in ports))
        views = {c.name: c.lines[:1] if c in (server, *workers) else c.lines
                 for c in (server, *workers, submit, submit_doomed, watch, cancel, *fetched)}
    results = [json.loads(c.lines[-1]) for c in fetched]
    names = {f"#{w.process.pid}" for w in workers}
    return Observed(
        ideal=seconds,
        checks={"a worker ran it": results[0]["pid"] in {w.process.pid for w in workers},
                "the watcher saw progress, then the end": any("step" in l for l in watch.lines)
                and watch.lines[-1].endswith("completed"),
                "two processes fetched the same result": results[0] == results[1],
                "the cancelled task is cancelled": cancel.lines[-1] == "cancelled",
                "the queue showed it running, and on which worker":
                "running" in running and any(name in running for name in names),
                "the workers' metrics counted the tasks they ended":
                sum(completed for completed, _ in scraped) >= 2
                and all(health == "OK" for _, health in scraped)},
        facts={"task_id": task_id, "result": results[0],
               "queue showed": [" ".join(line.split()) for line in queued.lines
                                if "running" in line or "#" in line],
               "metrics: tasks completed, health": scraped,
               **{f"{name} said": lines[-1] for name, lines in views.items()},
               "watch saw": [line.split("  ")[-1] for line in watch.lines if "step" in line]})


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


MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientInfo": {"name": "tasks-demo", "version": "1"},
               "io.modelcontextprotocol/clientCapabilities": {
                   "extensions": {"io.modelcontextprotocol/tasks": {}}}}


def rpc(url: str, method: str, params: dict, name: str | None = None,
        timeout: float = 10, tasks: bool = True, token: str | None = None
        ) -> tuple[int | None, dict, Any]:
    """One request of the stateless protocol: (HTTP status, headers, JSON answer or text).

    `tasks`: the client declares the tasks extension (else a tools/call is a
    plain call). Status None: no connection could be made, so the request
    surely reached no server and is safe to send again. Status 0: the
    connection broke after the request went out; the server may have acted on it.
    """
    meta = MODERN_META if tasks else {**MODERN_META,
                                      "io.modelcontextprotocol/clientCapabilities": {}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": {**params, "_meta": meta}}).encode()
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": method,
               **({"mcp-name": name} if name else {}),
               **({"authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer, text = response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        status, answer, text = error.code, error.headers, error.read().decode()
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None, {}, str(error.reason)
        return 0, {}, str(error.reason)
    except (http.client.HTTPException, OSError) as error:
        return 0, {}, str(error)
    try:
        return status, {k.lower(): v for k, v in answer.items()}, json.loads(text)
    except ValueError:
        return status, {k.lower(): v for k, v in answer.items()}, text


HAPROXY = """
defaults
    mode http
    maxconn 10000
    timeout connect 1s
    # A client must send its whole request (headers and body) in 10 s, may sit
    # idle 5 s between requests, 60 s in one; an answer may pause 60 s (a late
    # answer is an event stream pinged every 15 s). Without these, a client that
    # sends a byte a second holds a connection for ever.
    timeout http-request 10s
    timeout http-keep-alive 5s
    timeout client 60s
    timeout server 60s
    # A connection refused never reached a replica: safe to send to another.
    # (Not a timeout or an empty answer: that request may have created a task.)
    retries 3
    option redispatch 1
    retry-on conn-failure
frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    # Which replica answered, for the story to show.
    http-response set-header X-Replica %[srv_name]
{servers}
"""


async def start_balancer(urls: list[str]) -> tuple[Child, str]:
    """HAProxy, round-robin over `urls`, no stickiness; its config in a folder of the story's."""
    if shutil.which("haproxy") is None:
        raise DemoError("this story needs a load balancer: install the haproxy package "
                        "(apt-get install haproxy, brew install haproxy)")
    port = free_port()
    servers = "\n".join(f"    server r{i} {url.split('/')[2]} check inter 200ms fall 1 rise 1"
                        for i, url in enumerate(urls, 1))
    folder = tempfile.mkdtemp(prefix="tasks-demo-haproxy-")
    FOLDERS.append(folder)
    config = Path(folder) / "haproxy.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    balancer = Child("haproxy", "haproxy", "-db", "-f", str(config))
    deadline = now() + 10
    while not listening(port):
        if balancer.process.poll() is not None or now() > deadline:
            raise DemoError(f"haproxy did not start: {' / '.join(balancer.lines[-3:])}")
        await asyncio.sleep(0.05)
    return balancer, f"http://127.0.0.1:{port}/mcp"


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


@story
async def replicas(scale: float) -> Observed:
    """Two replicas on one Redis behind HAProxy, round-robin: any replica answers any request."""
    seconds = 4 * scale
    async with child_processes():
        backend = await start_redis()
        worker = Child.demo("worker", "worker", "--backend", backend)
        (first, url1), (_, url2) = await asyncio.gather(
            start_server("--backend", backend, "--no-worker"),
            start_server("--backend", backend, "--no-worker"))
        _, url = await start_balancer([url1, url2])
        await worker.expect("worker pid=")
        ask = functools.partial(asyncio.to_thread, rpc, url)
        answers = []  # (replica, method, HTTP status), for every request

        async def send(method: str, params: dict, name: str | None = None) -> dict:
            status, headers, answer = await ask(method, params, name)
            answers.append((headers.get("x-replica"), method, status))
            return answer

        job = {"label": "balanced", "seconds": seconds, "steps": 8}
        task_id = (await send("tools/call", {"name": "work", "arguments": job},
                              "work"))["result"]["taskId"]
        doomed = (await send("tools/call", {"name": "work", "arguments": {
            "label": "doomed", "seconds": 60}}, "work"))["result"]["taskId"]
        await send("tasks/cancel", {"taskId": doomed})
        cancelled = (await send("tasks/get", {"taskId": doomed}))["result"]["status"]
        killed_at = None
        while (record := (await send("tasks/get", {"taskId": task_id}))["result"])[
                "status"] not in TERMINAL:
            if killed_at is None and step_of(record.get("statusMessage")) >= 2:
                first.kill()  # SIGKILL replica 1 mid-task: clients keep going
                killed_at = len(answers)
            await asyncio.sleep(0.1)
    before, after = answers[:killed_at], answers[killed_at:]
    return Observed(
        ideal=seconds,
        checks={"both replicas answered, no stickiness": {r for r, _, _ in before}
                == {"r1", "r2"},
                "after replica 1 died, replica 2 answered everything":
                {r for r, _, _ in after} == {"r2"},
                "no request failed, before or after the kill": all(s == 200 for _, _, s in answers),
                "the task completed through the balancer": record["status"] == "completed"
                and record["result"]["structuredContent"]["label"] == "balanced",
                "cancel through the balancer": cancelled == "cancelled"},
        facts={"requests": len(answers),
               "answered_by": {r: sum(1 for a in answers if a[0] == r) for r in ("r1", "r2")},
               "first_requests": [f"{m} → {r}" for r, m, _ in answers[:6]],
               "after_the_kill": f"{len(after)} requests, all → r2",
               "result": record["result"]["structuredContent"]})


async def load(url: str, count: int, seconds: float, over: float, poll: float,
               token: str | None = None) -> dict:
    """`task load`: submit `count` tasks through `url` over `over` seconds; follow each.

    Reading a task is safe to retry, whatever went wrong. A submit is retried
    only when no replica got it (no connection, or the balancer's 503): once
    a request reached a server it may have created a task, and the protocol
    has no idempotency key to tell, so it is counted as unsure instead.
    """
    retried, unsure, submitted_at, ended = 0, [], {}, {}

    async def ask(method: str, params: dict, name: str | None = None) -> dict | None:
        nonlocal retried
        for attempt in range(8):  # ~25 s of back-off: longer than any restart here
            status, _, answer = await asyncio.to_thread(rpc, url, method, params, name,
                                                        token=token)
            broken = not isinstance(answer, dict) or (
                answer.get("error", {}).get("code") == -32603)  # the server's own failure
            if status is not None and 0 < status < 500 and not broken:
                return answer  # an answer, if only "not found"
            if method == "tools/call" and status not in (None, 503):
                return None  # it reached a server: a task may exist
            retried += 1
            await asyncio.sleep(0.1 * 2 ** attempt)
        return None

    async def submit() -> None:
        start = now()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * over / count - now()))
            answer = await ask("tools/call", {"name": "work", "arguments": {
                "label": f"load-{os.getpid()}-{i}", "seconds": seconds, "steps": 2}}, "work")
            if answer is None or "taskId" not in answer.get("result", {}):
                unsure.append(time.time())  # when: the account tells which fault it met
            else:
                submitted_at[answer["result"]["taskId"]] = now()

    async def follow_all() -> None:  # while submitting, as a real client would
        while not submitting.done() or len(ended) < len(submitted_at):
            for task_id in set(submitted_at) - set(ended):
                answer = await ask("tasks/get", {"taskId": task_id})
                if answer is None:
                    continue  # no answer yet (the store is away): ask again next round
                record = answer.get("result", {})
                state = record.get("status", "lost")  # the server says: not found
                if state in TERMINAL or state == "lost":  # and the result, as first seen
                    ended[task_id] = [state, round(now() - submitted_at[task_id], 3),
                                      record.get("result", {}).get("structuredContent")]
            await asyncio.sleep(poll)

    print("submitting", flush=True)
    submitting = asyncio.create_task(submit())
    await asyncio.gather(submitting, follow_all())
    return {"unsure_submits": unsure, "retried": retried, "ended": ended}


FAULTS = ("worker", "replica", "redis", "paused")
# SIGSTOP a worker past the redelivery timeout (a GC pause, a VM stall, a
# laptop lid), then SIGCONT: its tasks run again elsewhere meanwhile, and its
# own runs finish late, after the first results were seen.
PAUSE = REDELIVERY_TIMEOUT * 2


@story
async def soak(scale: float, tasks: int = 120, clients: int = 2, faults: tuple = FAULTS,
               persistent: bool = True) -> Observed:
    """Clients load two replicas through HAProxy while a worker, a replica and Redis restart."""
    seconds, over = 2 * scale, 30 * scale  # each task's work; how long clients submit
    async with child_processes():
        port, folder = free_port(), tempfile.mkdtemp(prefix="tasks-demo-redis-")
        FOLDERS.append(folder)
        redis = redis_process(port, persistent, folder)
        await redis.expect("Ready to accept connections")
        backend = f"redis://127.0.0.1:{port}/0"
        workers = [Child.demo(f"worker {i}", "worker", "--backend", backend, "--journal")
                   for i in (1, 2)]
        servers = list(await asyncio.gather(*(start_server("--backend", backend, "--no-worker")
                                              for _ in (1, 2))))
        _, url = await start_balancer([u for _, u in servers])
        for w in workers:
            await w.expect("worker pid=")
        probe_id = (await asyncio.to_thread(rpc, url, "tools/call", {"name": "work", "arguments": {
            "label": "probe", "seconds": 0}}, "work"))[2]["result"]["taskId"]
        loads = [Child.demo(f"client {i}", "task", "load", "--url", url,
                            "--count", str(tasks // clients), "--seconds", str(seconds),
                            "--over", str(over)) for i in range(clients)]
        for c in loads:  # each takes a few seconds to start: the clock starts after
            await c.expect("submitting")
        t0, probes, struck, paused = now(), [], {}, [workers[1]]

        async def probe() -> None:  # what a client sees of each fault: (at, took, ok)
            while True:
                start = now()
                status, _, answer = await asyncio.to_thread(rpc, url, "tasks/get",
                                                            {"taskId": probe_id}, None, 5)
                ok = status == 200 and "result" in answer
                probes.append((start - t0, now() - start, ok))
                await asyncio.sleep(0.05)

        async def strike(fault: str, at: float) -> None:
            await asyncio.sleep(max(0.0, t0 + at - now()))
            # A pause that catches no task, or one about to end, shows nothing:
            # pause a worker that has just begun one, while another is up to
            # take it over (a killed worker's replacement takes seconds to start).
            while fault == "paused" and now() < t0 + at + over:
                up = all(any(line.startswith("worker pid=") for line in w.lines)
                         for w in workers)
                busy = [w for w in workers if up and await running(w, since=seconds / 3)]
                if busy:
                    paused[:] = busy[:1]
                    break
                await asyncio.sleep(0.02)
            struck[fault] = (now() - t0, strike_at(fault), time.time())
            # Down for a second, then back; a paused worker, past its claim.
            await asyncio.sleep(PAUSE.total_seconds() if fault == "paused" else 1)
            restart(fault)

        def strike_at(fault: str) -> int:
            victim = {"worker": workers[0], "replica": servers[0][0], "redis": redis,
                      "paused": paused[0]}[fault]
            if fault == "redis":
                victim.process.terminate()  # a clean restart: Redis writes its file first
                victim.process.wait()
            elif fault == "paused":
                victim.process.send_signal(signal.SIGSTOP)
            else:
                victim.kill()  # SIGKILL: no goodbye
            return victim.process.pid

        def restart(fault: str) -> None:  # (a killed worker or replica: `supervise`)
            if fault == "paused":
                paused[0].process.send_signal(signal.SIGCONT)
            elif fault == "redis":
                nonlocal redis
                redis = redis_process(port, persistent, folder)

        async def supervise() -> None:
            """Start a worker or replica that exited again a second later, as systemd
            or Kubernetes would: killed, or started while Redis was down (it exits)."""
            exited: dict[int, float] = {}
            while True:
                for i, child in enumerate([*workers, *(c for c, _ in servers)]):
                    if child.process.poll() is None or now() - exited.setdefault(
                            child.process.pid, now()) < 1:
                        continue
                    if i < len(workers):
                        workers[i] = Child.demo(f"worker {i + 1} again", "worker",
                                                "--backend", backend, "--journal")
                    else:
                        j, served = i - len(workers), servers[i - len(workers)][1]
                        servers[j] = (Child.demo(f"replica {j + 1} again", "serve", "--port",
                                                 str(urllib.parse.urlsplit(served).port),
                                                 "--backend", backend, "--no-worker"), served)
                await asyncio.sleep(0.1)

        async def running(worker: Child, since: float = math.inf) -> bool:
            """A body of its has started (less than `since` seconds ago), not ended."""
            from redis.exceptions import RedisError

            try:
                for key in [k async for k in journal.scan_iter("journal:*")]:
                    events = [e.split() for e in await journal.lrange(key, 0, -1)]
                    mine = [e for e in events if e[1] == str(worker.process.pid)]
                    started = [e for e in mine if e[0] == "start"]
                    if len(started) * 2 > len(mine) and time.time() - float(
                            started[-1][2]) < since:
                        return True
            except RedisError:  # (Redis may be the fault of the moment)
                pass
            return False

        from redis.asyncio import Redis

        journal = Redis.from_url(backend, decode_responses=True)
        watching = [asyncio.create_task(probe()), asyncio.create_task(supervise())]
        await asyncio.gather(*(strike(f, over * (0.15 + 0.2 * i)) for i, f in enumerate(faults)))
        reports = [json.loads((await c.finish(timeout=over + 120)).strip()) for c in loads]
        for watcher in watching:
            watcher.cancel()
        deadline = now() + 60  # the paused worker's own runs end late: let them
        while "paused" in faults and await running(paused[0]) and now() < deadline:
            await asyncio.sleep(0.2)
        await journal.aclose()
        account = await tally(backend, url, reports, struck, probe_id, probes)
    return Observed(
        ideal=over + seconds,
        checks={"no task lost": not account["lost"],
                "every task the server ran, a client knew (or was unsure of)":
                account["unknown_ran"] <= account["unsure_submits"],
                "every second run is explained by a fault": not account["unexplained_reruns"],
                "no result changed once seen, late runs included":
                not account["results_changed"],
                "one effect per completed task, however many runs":
                account["effects_per_task"] == {1: account["completed"]},
                "a request failed only when a fault struck":
                "no fault" not in account["unsure_during"]},
        facts=account)


async def tally(backend: str, url: str, reports: list[dict], struck: dict, probe_id: str,
                probes: list[tuple[float, float, bool]]) -> dict:
    """The soak's account, from the server side: every body's runs, as Redis recorded them."""
    from collections import Counter

    from redis.asyncio import Redis

    redis = Redis.from_url(backend, decode_responses=True)
    runs = {key.split(":")[-1]: [line.split() for line in await redis.lrange(key, 0, -1)]
            async for key in redis.scan_iter("journal:*")}
    # The effect `task_body` posts once per task: a list, so a second post would show.
    effects = Counter(line.split()[0] for line in await redis.lrange(f"{QUEUE}:outbox", 0, -1))
    await redis.aclose()
    runs.pop(probe_id, None)
    ended = {task_id: end for r in reports for task_id, end in r["ended"].items()}
    changed = []  # each result again, now that every run has ended, against the first seen
    for task_id, (state, _, first) in ended.items():
        if state == "completed":
            answer = (await asyncio.to_thread(rpc, url, "tasks/get", {"taskId": task_id}))[2]
            if answer["result"]["result"].get("structuredContent") != first:
                changed.append(task_id[:8])
    reruns, unexplained = {}, []
    for task_id, events in runs.items():
        starts = [i for i, e in enumerate(events) if e[0] == "start"]
        for first, again in zip(starts, starts[1:]):
            # A second run is the price of at-least-once delivery: the first
            # run's worker died (the task is redelivered after the timeout), or
            # Redis went away under a running body. Either way that first run
            # never ended, and the fault struck while it ran.
            pid, started = int(events[first][1]), float(events[first][2])
            rerun = float(events[again][2])
            unfinished = not any(e[1] == str(pid) and e[0] != "start"
                                 for e in events[first + 1:again])
            during = {f for f, (_, _, wall) in struck.items() if started <= wall <= rerun}
            if unfinished and "worker" in during and pid == struck["worker"][1]:
                why = f"worker killed; run again {rerun - struck['worker'][2]:.1f} s later"
            elif unfinished and "paused" in during and pid == struck["paused"][1]:
                why = f"worker paused; run again {rerun - struck['paused'][2]:.1f} s later"
            elif unfinished and "redis" in during:
                why = "Redis restarted under it"
            else:
                why = "?"
                unexplained.append(task_id)
            reruns[task_id[:8]] = why
    latencies = sorted(t for state, t, _ in ended.values() if state == "completed")
    return {
        "submitted": len(ended),
        "completed": sum(1 for s, _, _ in ended.values() if s == "completed"),
        "failed": sum(1 for s, _, _ in ended.values() if s == "failed"),
        "lost": [t[:8] for t, (s, _, _) in ended.items() if s != "completed"],
        "unsure_submits": sum(len(r["unsure_submits"]) for r in reports),
        # A fault's down second plus two of recovery: what met no fault was load.
        "unsure_during": sorted({next((f for f, (_, _, wall) in struck.items()
                                       if 0 <= at - wall < 3), "no fault")
                                 for r in reports for at in r["unsure_submits"]}),
        "unknown_ran": len(set(runs) - set(ended)),
        "ran_twice_and_why": reruns,
        "unexplained_reruns": unexplained,
        "results_changed": changed,
        "effects_per_task": dict(Counter(effects[t] for t, (s, _, _) in ended.items()
                                         if s == "completed")),
        "retried_requests": sum(r["retried"] for r in reports),
        "faults_at_s": {f: round(at, 1) for f, (at, _, _) in struck.items()},
        "what_a_client_saw": client_view(struck, probes),
        "submit_to_result_p50_s": latencies[len(latencies) // 2] if latencies else None,
        "submit_to_result_p99_s": latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


def client_view(struck: dict, probes: list[tuple[float, float, bool]]) -> dict[str, str]:
    """What the probe client saw of each fault, from when it struck until the next one."""
    seen, times = {}, sorted(at for at, _, _ in struck.values()) + [math.inf]
    for fault, (at, _, _) in struck.items():
        until = min(at + 10, next(t for t in times if t > at))
        window = [(start, took, ok) for start, took, ok in probes if at - 0.1 <= start < until]
        failed = [start for start, _, ok in window if not ok]
        seen[fault] = (f"requests failed for {failed[-1] - failed[0] + 0.05:.1f} s "
                       f"({len(failed)} of {len(window)}), then answered" if failed else
                       f"no request failed (slowest {max(t for _, t, _ in window):.2f} s)"
                       if window else "the next fault struck before a request went out")
    return seen


# --------------------------------------------------------------------------
# research: one long task, an agent doing the thinking
# --------------------------------------------------------------------------
# Deep research is what tasks are for: minutes of model calls, paid per token,
# that should survive the caller. Any model string pydantic-ai accepts
# (anthropic:claude-sonnet-4-5, google-gla:gemini-2.5-flash, or `test`, its
# offline model), set per process by `research --model`, `serve --model` or
# `worker --model`; the key comes from the provider's usual variable.
RESEARCH_MODEL: Any = None


async def deep_research(
    topic: Annotated[str, Field(description="what to research", max_length=200)],
    sources: Annotated[int, Field(description="sources to search", ge=1, le=10)] = 3,
    seconds: Annotated[float, Field(description="how long a search takes", ge=0, le=60,
                                    allow_inf_nan=False)] = 2.0,
    ctx: Context = CurrentContext(),
) -> dict:
    """Research `topic`: a model plans, its searches (its tool calls) run in parallel."""
    from pydantic_ai import Agent, ToolCallPart  # this path only: the first run stays light
    from pydantic_ai.exceptions import AgentRunError, UserError
    from pydantic_ai.usage import UsageLimits

    class Report(BaseModel):
        summary: str
        findings: list[str]

    searched: list[str] = []

    async def search(query: str) -> str:
        """Search one source for `query`."""
        searched.append(query)
        return await asyncio.sleep(seconds, f"3 sources agree on {query!r}")

    # A model spends money: cap what one task may ask of it, whatever it decides.
    limits = UsageLimits(request_limit=sources + 3, tool_calls_limit=sources)
    try:  # building the agent resolves the model: a missing key shows here
        agent = Agent(RESEARCH_MODEL, output_type=Report, tools=[search], instructions=(
            f"Research the topic. Call `search` for {sources} different queries in one turn, "
            "then write a short summary and one finding per search."))
        async with agent.iter(f"Topic: {topic}", usage_limits=limits) as run:
            async for node in run:  # each step of the agent, as the task's status
                if Agent.is_model_request_node(node):
                    await report(ctx, 0, None,
                                 f"asking the model (request {run.usage.requests + 1})")
                elif Agent.is_call_tools_node(node):
                    calls = [p.args_as_dict().get("query", "") for p in node.model_response.parts
                             if isinstance(p, ToolCallPart) and p.tool_name == "search"]
                    if calls:  # (the model's final answer is a tool call too)
                        await report(ctx, 0, None, f"searching: {' | '.join(calls)}")
    except (AgentRunError, UserError) as error:  # a model error, a missing key: an answer
        raise ToolError(f"the model failed: {error}") from None
    found = run.result.output
    return {"topic": topic, "sources": len(searched), "summary": found.summary,
            "findings": found.findings, "model_requests": run.usage.requests}


def model_in_place(server: FastMCP) -> None:
    """With RESEARCH_MODEL set, `server` has `deep_research`, run by that model."""
    if RESEARCH_MODEL is not None:
        server.tool(task_body(journaled(deep_research)), task=TASK)


@story
async def research(scale: float, model: Any = "test") -> Observed:
    """Deep research by a model, as one task: its steps are the task's status."""
    global RESEARCH_MODEL
    RESEARCH_MODEL, t0, seconds = model, now(), 1 * scale
    try:
        server = await tasks_server()
        model_in_place(server)
        async with server._lifespan_manager(), Client(server) as client:
            say(f"asking {model}" if model != "test" else "asking pydantic-ai's offline test "
                "model: it calls each tool once and answers placeholder words (--model: a real one)")
            task = await call_tool_task(client, "deep_research", {
                "topic": "solid-state batteries", "sources": 3, "seconds": seconds},
                raise_on_error=False)
            steps = [s.message for s in await follow(task, t0) if s.message]
            result = await task.result()
    finally:
        RESEARCH_MODEL = None
    found = result.structured_content or {}
    return Observed(
        ideal=seconds,  # the searches, side by side; what the model takes comes on top
        checks={"the agent's steps were visible as status messages":
                any(m.startswith(("asking the model", "searching")) for m in steps),
                "the model's searches were its tool calls": found.get("sources", 0) >= 1,
                "the task completed with the model's report": not result.is_error},
        facts={"model": str(model) if model != "test" else "test (offline: placeholder words)",
               "steps_seen": list(dict.fromkeys(steps)),
               "report": found or result.content[0].text})


# --------------------------------------------------------------------------
# The bench: what a task costs, in numbers
# --------------------------------------------------------------------------

ZERO_WORK = {"label": "zero", "seconds": 0, "steps": 1}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[round(p / 100 * (len(ordered) - 1))]


def spread_ms(what: str, seconds: list[float]) -> dict:
    return {"what": what, "median_ms": 1000 * percentile(seconds, 50),
            "p90_ms": 1000 * percentile(seconds, 90), "worst_ms": 1000 * max(seconds)}


@asynccontextmanager
async def default_poll_server() -> AsyncIterator[FastMCP]:
    """`work` as the library configures it by default: clients told to poll every 5 s."""
    server = FastMCP("default-poll")
    server.add_extension(TasksExtension(url="memory://", name=f"bench-{secrets.token_hex(4)}"))
    server.tool(work, task=TaskConfig(mode="optional"))
    async with server._lifespan_manager():
        yield server


async def seconds_to_result(client: Client, seconds: float) -> float:
    start = now()
    task = await call_tool_task(client, "work", {"label": "lag", "seconds": seconds, "steps": 1})
    await task.result()
    return now() - start


async def result_lag(durations: tuple[float, ...], reps: int) -> list[dict]:
    """How late a finished task is seen: submit-to-result time minus the work.

    The lag depends on where the end of the work falls between two polls, so
    each repetition shifts the duration by a further slice of a poll interval:
    the figures cover every phase, not the luckiest or unluckiest one.
    """
    rows = []
    phase = POLL_INTERVAL.total_seconds() / reps
    async with (serving() as ours, default_poll_server() as default,
                Client(ours) as ours_client, Client(default) as default_client):
        for client in (ours_client, default_client):
            await client.list_tools()  # the client caches output schemas once
        for seconds in durations:
            lags: dict[str, list[float]] = {"ours": [], "default": []}
            for rep in range(reps):
                work_s = seconds + rep * phase
                # Both settings side by side: the 5 s one barely polls at all.
                ours_s, default_s = await asyncio.gather(
                    seconds_to_result(ours_client, work_s),
                    seconds_to_result(default_client, work_s))
                lags["ours"].append(ours_s - work_s)
                lags["default"].append(default_s - work_s)
            for which, values in lags.items():
                interval = POLL_INTERVAL if which == "ours" else TaskConfig().poll_interval
                rows.append({"work_s": seconds,
                             "poll_interval_ms": int(interval.total_seconds() * 1000),
                             "median_ms": 1000 * percentile(values, 50),
                             "worst_ms": 1000 * max(values)})
    return rows


async def overhead(samples: int) -> list[dict]:
    """What a task adds over a plain call, for work that takes no time."""
    plain_call, submit, status_read, to_result = [], [], [], []
    async with (serving() as server, Client(server) as client,
                Client(server, mode="legacy") as plain):
        await client.list_tools()  # the client caches output schemas once
        await plain.call_tool("work", ZERO_WORK)  # warm both paths up first
        await call_tool_task(client, "work", ZERO_WORK)
        for _ in range(samples):
            start = now()
            await plain.call_tool("work", ZERO_WORK)
            plain_call.append(now() - start)

            start = now()
            task = await call_tool_task(client, "work", ZERO_WORK)
            submit.append(now() - start)
            read = now()
            await task.status()
            status_read.append(now() - read)
            await task.result()
            to_result.append(now() - start)
    return [spread_ms("plain call (no task)", plain_call), spread_ms("submit a task", submit),
            spread_ms("read its status", status_read), spread_ms("submit to result", to_result)]


async def throughput(count: int) -> dict:
    """`count` zero-length tasks submitted and collected at once, vs plain calls."""
    async with (serving() as server, Client(server) as client,
                Client(server, mode="legacy") as plain):
        await client.list_tools()
        args = [{**ZERO_WORK, "label": f"T{i}"} for i in range(count)]
        start = now()
        tasks = await asyncio.gather(*(call_tool_task(client, "work", a) for a in args))
        results = await asyncio.gather(*tasks)
        tasks_s = now() - start
        start = now()
        plain_results = await asyncio.gather(*(plain.call_tool("work", a) for a in args))
        plain_s = now() - start
    labels = [a["label"] for a in args]
    return {
        "tasks": count,
        "tasks_per_s": count / tasks_s,
        "plain_calls_per_s": count / plain_s,
        "ratio_to_plain": plain_s / tasks_s,
        "every_result_once": [r.data["label"] for r in results] == labels
        and [r.data["label"] for r in plain_results] == labels
        and all(JOURNAL.of(t.task_id) == ["start", "done"] for t in tasks),
    }


def cold_start(quick: bool) -> list[dict]:
    """Process start to answer, for the things a learner types first."""
    python, script = sys.executable, os.path.abspath(__file__)
    commands = {
        "tasks_demo.py --help": [script, "--help"],
        "import fastmcp_tasks": ["-c", "import fastmcp_tasks"],
        "tasks_demo.py await (first result)": [script, "--scale", "0.1", "await"],
    }
    if quick:
        commands = {"tasks_demo.py --help": commands["tasks_demo.py --help"]}
    reps, rows = 1 if quick else 3, []
    for what, args in commands.items():
        times = []
        for _ in range(reps):
            start = now()
            subprocess.run([python, *args], capture_output=True, check=True)
            times.append(now() - start)
        rows.append(spread_ms(what, times))
    return rows


async def bench(quick: bool, distributed: bool) -> dict:
    """Every figure, as plain data (printed as tables, or as JSON)."""
    from importlib.metadata import version

    scale = 0.1 if quick else 1.0
    start = now()
    compared = await compare(scale)
    return {
        **({"distributed": await bench_distributed(quick)} if distributed else {}),
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "fastmcp": version("fastmcp"), "fastmcp_tasks": version("fastmcp-tasks"),
                    "pydocket": version("pydocket"), "quick": quick},
        "compare": compared.facts | {"scale": scale, "took_s": now() - start},
        "result_lag": await result_lag((0.1, 0.5) if quick else (0.1, 0.5, 1, 2, 3),
                                       reps=2 if quick else 4),
        "overhead": await overhead(samples=10 if quick else 50),
        "throughput": [await throughput(n) for n in ((20,) if quick else (100, 1000))],
        "cold_start": cold_start(quick),
    }


# The same, past one process: Redis, HTTP, separate workers (bench --distributed).



def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def submit_many(url: str, count: int, seconds: float) -> list[str]:
    args = {"name": "work", "arguments": {"label": "bench", "seconds": seconds, "steps": 1}}
    answers = await asyncio.gather(*(asyncio.to_thread(rpc, url, "tools/call", args, "work", 60)
                                     for _ in range(count)))
    return [a[2]["result"]["taskId"] for a in answers]


async def scaling(workers: int, count: int, seconds: float, bare: bool = False) -> dict:
    """Sleep-bound tasks, a backlog of `count`, drained by `workers` worker processes.

    The backlog is submitted first, so the workers never wait for work, and
    nobody polls: each worker's throughput comes from its own journal in Redis
    (first start to last end), free of what polling costs (table 8). `bare`:
    the same through Docket alone (no MCP, no fastmcp-tasks), the floor.
    """
    async with child_processes():
        backend = await start_redis()
        server, url = await start_server("--backend", backend, "--no-worker")
        if bare:
            await bare_backlog(backend, count, seconds)
        else:
            await submit_many(url, count, seconds)
        crew = [Child(f"bare worker {i}", sys.executable, "-c", BARE_WORKER, backend) if bare
                else Child.demo(f"worker {i}", "worker", "--backend", backend, "--journal")
                for i in range(workers)]
        pids = {w.process.pid: w for w in crew}
        from redis.asyncio import Redis

        redis = Redis.from_url(backend, decode_responses=True)
        redis_pid = int((await redis.info("server"))["process_id"])
        everyone = [server.process.pid, redis_pid, *pids]
        runs: list[list[str]] = []
        cpu_at_start: dict[int, float] = {}
        while len(runs) < count or any(len(r) < 2 for r in runs):
            await asyncio.sleep(0.1)
            runs = [await redis.lrange(k, 0, -1) async for k in redis.scan_iter("journal:*")]
            if runs and not cpu_at_start:  # the drain has begun
                cpu_at_start, began = {p: cpu_seconds(p) for p in everyone}, now()
        cores = {p: (cpu_seconds(p) - cpu_at_start[p]) / (now() - began) for p in everyone}
        await redis.aclose()
    per_worker = {}
    for pid in pids:
        events = [e.split() for r in runs for e in r if e.split()[1] == str(pid)]
        if events:
            times = [float(e[2]) for e in events]
            per_worker[pid] = sum(e[0] == "done" for e in events) / (max(times) - min(times))
    total = sum(per_worker.values())
    ideal = workers * CONCURRENCY / seconds
    return {"workers": f"{workers}{', Docket alone' if bare else ''}", "tasks": count,
            "tasks_per_s": total, "ideal_per_s": ideal,
            "ratio_to_ideal": total / ideal,
            "cores_workers": sum(cores[p] for p in pids), "cores_redis": cores[redis_pid],
            "cores_server": cores[server.process.pid]}


# Docket alone, for the floor: the same sleep and the same journal, no MCP.
BARE = "bare"
BARE_WORKER = (f"import asyncio, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
               "import tasks_demo; asyncio.run(tasks_demo.bare_worker(sys.argv[1]))")


async def bare_sleep(seconds: float) -> None:
    key = current_execution.get().key
    await JOURNAL.note(key, "start")
    await asyncio.sleep(seconds)
    await JOURNAL.note(key, "done")


async def bare_worker(backend: str) -> None:
    """A Docket worker, its settings those of `worker`, running `bare_sleep`."""
    from docket import Docket, Worker

    global JOURNAL
    JOURNAL = RedisJournal(backend)
    async with Docket(name=BARE, url=backend) as docket:
        docket.register(bare_sleep)
        async with Worker(docket, concurrency=CONCURRENCY, redelivery_timeout=REDELIVERY_TIMEOUT,
                          minimum_check_interval=check_interval(backend)) as worker:
            await worker.run_forever()


async def bare_backlog(backend: str, count: int, seconds: float) -> None:
    from docket import Docket

    async with Docket(name=BARE, url=pooled(backend)) as docket:
        docket.register(bare_sleep)
        await asyncio.gather(*(docket.add(bare_sleep)(seconds) for _ in range(count)))


async def per_request(duration: float, clients: int = 10) -> list[dict]:
    """Server CPU per request, on Redis over HTTP: a plain call, a task, Docket alone.

    `clients` closed-loop threads for `duration` seconds each; the server is
    one `serve` process with its worker; the CPU is that process's own. Docket
    alone runs a producer and a worker in this process, with no HTTP and no
    MCP: the floor under what a task can cost.
    """
    zero = {"name": "work", "arguments": ZERO_WORK}

    def plain(url: str) -> None:
        rpc(url, "tools/call", zero, "work", tasks=False)

    def task(url: str) -> None:
        task_id = rpc(url, "tools/call", zero, "work")[2]["result"]["taskId"]
        while rpc(url, "tasks/get", {"taskId": task_id})[2]["result"]["status"] != "completed":
            time.sleep(POLL_INTERVAL.total_seconds())

    rows = []
    async with child_processes():
        backend = await start_redis()
        server, url = await start_server("--backend", backend)
        for what, one in (("plain tools/call", plain), ("task: submit, poll, result", task)):
            one(url)  # warm
            done, before, start = [], cpu_seconds(server.process.pid), now()

            def loop() -> None:
                while now() - start < duration:
                    one(url)
                    done.append(1)
            await asyncio.gather(*(asyncio.to_thread(loop) for _ in range(clients)))
            took, cpu = now() - start, cpu_seconds(server.process.pid) - before
            rows.append({"what": what, "per_s": len(done) / took,
                         "server_cpu_ms": 1000 * cpu / len(done)})
        rows.append(await docket_alone(backend, duration, clients))
    return rows


async def docket_alone(backend: str, duration: float, clients: int) -> dict:
    from docket import Docket, Worker

    async def nothing() -> dict:
        return {"pid": os.getpid()}

    async with Docket(name=BARE, url=backend) as docket:
        docket.register(nothing)
        async with Worker(docket, concurrency=CONCURRENCY,
                          minimum_check_interval=check_interval(backend),
                          redelivery_timeout=REDELIVERY_TIMEOUT) as worker:
            running = asyncio.create_task(worker.run_forever())
            done, before, start = [], time.process_time(), now()

            async def loop() -> None:
                while now() - start < duration:
                    await (await docket.add(nothing)()).get_result()
                    done.append(1)
            await asyncio.gather(*(loop() for _ in range(clients)))
            took, cpu = now() - start, time.process_time() - before
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    return {"what": "the same job, Docket alone", "per_s": len(done) / took,
            "server_cpu_ms": 1000 * cpu / len(done)}


async def polling_capacity(backend_kind: str, duration: float) -> dict:
    """tasks/get a second one replica answers over HTTP, and what that carries."""
    async with child_processes():
        backend = await start_redis() if backend_kind == "redis" else "memory://"
        server, url = await start_server("--backend", backend)
        args = {"name": "work", "arguments": {"label": "polled", "seconds": 0}}
        task_id = (await asyncio.to_thread(rpc, url, "tools/call", args, "work"))[2][
            "result"]["taskId"]
        before, start, answered = cpu_seconds(server.process.pid), now(), 0

        async def hammer() -> None:
            nonlocal answered
            while now() - start < duration:
                await asyncio.to_thread(rpc, url, "tasks/get", {"taskId": task_id})
                answered += 1

        await asyncio.gather(*(hammer() for _ in range(6)))
        cores = (cpu_seconds(server.process.pid) - before) / (now() - start)
    per_core = answered / (now() - start) / max(cores, 0.01)
    return {"backend": backend_kind, "gets_per_s": answered / (now() - start),
            "server_cores": cores, "gets_per_core_per_s": per_core,
            **{f"clients_per_core_at_{label}": per_core * interval
               for label, interval in (("20ms", 0.02), ("1s", 1), ("5s", 5))}}


async def memory_per_result(count: int) -> list[dict]:
    """What `count` finished tasks keep, per 10,000, in Redis and in a memory:// server."""
    rows = []
    async with child_processes():
        backend = await start_redis()
        from redis.asyncio import Redis

        redis = Redis.from_url(backend)
        for kind, target in (("redis", backend), ("memory://", "memory://")):
            server, url = await start_server("--backend", target)
            measure = ((lambda: redis.info("memory")) if kind == "redis" else None)
            before = ((await measure())["used_memory"] if measure
                      else rss_bytes(server.process.pid))
            task_ids = await submit_many(url, count, 0)
            while (await asyncio.to_thread(rpc, url, "tasks/get", {"taskId": task_ids[-1]}))[
                    2]["result"]["status"] not in TERMINAL:
                await asyncio.sleep(0.1)
            after = ((await measure())["used_memory"] if measure
                     else rss_bytes(server.process.pid))
            rows.append({"where": kind, "tasks": count,
                         "mb_per_10k_results": (after - before) / count * 10_000 / 2**20})
            server.kill()
        await redis.aclose()
    return rows


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def bench_distributed(quick: bool) -> dict:
    """Cost of scale, on Redis over HTTP: workers, polling, memory."""
    per_worker = 20 if quick else 100  # tasks of 0.5 s: each run ideally takes 2.5 or 5 s
    return {
        "per_request": await per_request(1 if quick else 8),
        "scaling": [await scaling(w, per_worker * w, 0.5, bare) for w in ((1, 2) if quick
                                                                           else (1, 2, 4))
                    for bare in (False, True)],
        "polling": [await polling_capacity(kind, 1 if quick else 5)
                    for kind in ("redis", "memory")],
        "memory": await memory_per_result(200 if quick else 2000),
    }


# --------------------------------------------------------------------------
# Printing what the lessons observed
# --------------------------------------------------------------------------

STATE_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow",
               "input_required": "magenta", "working": "cyan", "working (queued)": "dim"}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def shown(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f} s" if key.endswith("_s") else f"{value:.2f}"
    if isinstance(value, list) and value and all(v in STATE_STYLE for v in value):
        return " → ".join(styled(v) for v in value)
    if isinstance(value, list):
        return ", ".join(shown(key, v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {shown(key, v)}" for k, v in value.items())
    return str(value)


def claim(fn: Callable) -> str:
    return fn.__doc__.strip().splitlines()[0]


def show(console: Console, seen: Observed, took: float) -> None:
    for check, ok in seen.checks.items():
        console.print(f"  {'[green]✓[/]' if ok else '[red]✗[/]'} {check}")
    fixed = f" + {seen.fixed:.2f} s starting processes" if seen.fixed else ""
    console.print(f"  [dim]ideal {seen.ideal:.2f} s{fixed}, took {took:.2f} s[/]")
    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in seen.facts.items():
        table.add_row(f"[dim]{key}[/]", shown(key, value))
    console.print(table)


WHY_NO_MESSAGE = {"working (queued)": "[dim]queued: no worker has picked it up[/]",
                  "completed": "[dim](the result is in)[/]"}


def dashboard(latest: dict[str, Sample]) -> Table:
    """The poll lesson's live table; fixed column widths, so it never jumps."""
    table = Table(title="tasks/get, polled at the server's pollIntervalMs", title_justify="left",
                  box=box.SIMPLE_HEAD)  # fits an 80-column terminal; long messages wrap
    for column, width in (("task", 6), ("state", 16), ("progress", 10),
                          ("status message", 26), ("elapsed", 8)):
        table.add_column(column, width=width, overflow="fold")
    for label, sample in sorted(latest.items()):
        part = re.search(r"(\d+)/(\d+)", sample.message or "")  # step 2/5, 7/20 run
        done = 1 if sample.state == "completed" else int(part[1]) / int(part[2]) if part else 0
        message = sample.message or WHY_NO_MESSAGE.get(sample.state, "")
        table.add_row(label, styled(sample.state), ProgressBar(total=1, completed=done, width=10),
                      message, f"{sample.at:.2f} s")
    return table


class Narration:
    """What a lesson says it waits for: live on a terminal (never silent for long),
    a plain line each otherwise."""

    def __init__(self, console: Console, name: str):
        self.console, self.name, self.said, self.start = console, name, "starting", now()
        self.live = Live(self, console=console, refresh_per_second=10, transient=True) \
            if console.is_terminal else None

    def __rich__(self) -> Any:
        return Spinner("dots", f"[dim]{self.name}: {self.said} ({now() - self.start:.1f} s)[/]")

    def __call__(self, what: str) -> None:
        self.said = what
        if self.live is None:
            self.console.print(f"  [dim]… {what}[/]")

    def __enter__(self) -> Narration:
        LISTENERS.append(self)
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        LISTENERS.remove(self)
        if self.live:
            self.live.stop()


async def run_one(name: str, scale: float, console: Console,
                  **options: Any) -> tuple[str, Observed, float]:
    fn = LESSONS.get(name) or STORIES[name]
    heading = f"{name} — {claim(fn)}"
    if console.is_terminal and len(heading) + 8 <= console.width:
        console.rule(f"[bold]{heading}[/]")
    else:  # a rule would cut the heading to the width
        console.print(f"\n== {heading}", soft_wrap=True)
    start = now()
    if name == "poll" and console.is_terminal:  # the showcase: a live table
        with Live(dashboard({}), console=console, refresh_per_second=20) as live:
            latest: dict[str, Sample] = {}

            def show_sample(label: str, sample: Sample) -> None:
                latest[label] = sample
                live.update(dashboard(latest))

            seen = await fn(scale, show_sample)
        console.print()
    else:
        with Narration(console, name):
            seen = await fn(scale, **{k: v for k, v in options.items() if v is not None})
    took = now() - start
    show(console, seen, took)
    return name, seen, took


def summary(runs: list[tuple[str, Observed, float]]) -> Table:
    table = Table(title="Summary")
    for column in ("lesson", "what it showed", "ideal", "took"):
        table.add_column(column, justify="right" if column in ("ideal", "took") else "left")
    for name, seen, took in runs:
        mark = "[green]✓[/]" if all(seen.checks.values()) else "[red]✗[/]"
        table.add_row(name, f"{mark} {claim(LESSONS[name])}", f"{seen.ideal:.2f} s",
                      f"{took:.2f} s")
    table.add_row("[bold]total[/]", "", f"{sum(s.ideal for _, s, _ in runs):.2f} s",
                  f"{sum(t for _, _, t in runs):.2f} s")
    return table


def table_of(title: str, rows: list[dict]) -> Table:
    """A table with one column per key: `_ms`, `_s` and `_per_s` say the unit."""
    table = Table(title=title, title_justify="left")
    for key in rows[0]:
        table.add_column(key.replace("_", " "), justify="left" if key == "what" else "right")
    for row in rows:
        cells = []
        for key, value in row.items():
            if isinstance(value, bool):
                cells.append("[green]yes[/]" if value else "[red]NO[/]")
            elif isinstance(value, float):
                decimals = (0 if key.endswith("per_s") else 1 if key.endswith("_ms")
                            else 3 if key.endswith("_s") or key.startswith("ratio") else 2)
                cells.append(f"{value:.{decimals}f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def show_bench(console: Console, figures: dict) -> None:
    machine = figures["machine"]
    console.rule(f"[bold]bench[/] — Python {machine['python']}, {machine['cpus']} CPUs, "
                 f"fastmcp {machine['fastmcp']}, fastmcp-tasks {machine['fastmcp_tasks']}")
    c = figures["compare"]
    console.print(table_of(
        f"1. Compare: 3 s + 2 s + 1 s of work at scale {c['scale']}",
        [{"what": what, "took_s": c[key], "ratio_to_gather": c[key] / c["gather_s"]}
         for what, key in (("sequential", "sequential_s"), ("asyncio.gather", "gather_s"),
                           ("background tasks", "tasks_s"))]))
    console.print(table_of("2. Result lag: how late a finished task is seen",
                           figures["result_lag"]))
    console.print(table_of("3. Overhead of a task, zero-length work", figures["overhead"]))
    console.print(table_of("4. Throughput, submitted and collected at once", figures["throughput"]))
    console.print(table_of("5. Cold start, process start to answer", figures["cold_start"]))
    if "distributed" in figures:
        d = figures["distributed"]
        console.print(table_of("6. What a request costs the server, Redis, 10 clients",
                               d["per_request"]))
        console.print(table_of("7. Workers on Redis, 0.5 s tasks, against Docket alone",
                               d["scaling"]))
        console.print(table_of("8. tasks/get one replica answers", d["polling"]))
        console.print(table_of("9. Memory kept per 10,000 finished tasks", d["memory"]))


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


class OneLineErrors(argparse.ArgumentParser):
    """An argparse parser whose errors are a single line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        # A mistyped command: the nearest one, not the whole list of 25.
        typo = re.match(r"argument (\w+): invalid choice: '([^']*)' \(choose from (.*)\)$",
                        message)
        if typo:
            choices = re.findall(r"'([^']*)'", typo[3])
            near = difflib.get_close_matches(typo[2], choices, n=1)
            message = (f"argument {typo[1]}: no such choice {typo[2]!r}"
                       + (f": did you mean {near[0]!r}?" if near else ""))
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def within(kind: type, low: float, high: float) -> Callable[[str], Any]:
    """Parse a number from `low` to `high`: what the server would accept."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text!r}")
        return value
    return parse


ID_MARK = "id:"  # (how parse_args keeps an id that begins with "-" from looking like a flag)


def http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http:// URL: {text!r}")
    return text


def bounded_text(most: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not 0 < len(text) <= most:
            raise argparse.ArgumentTypeError(f"takes 1 to {most} characters, got {len(text)}")
        return text
    return parse


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", within(int, 1, 65535)(port)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineErrors(prog="tasks_demo.py",
                           description="MCP background tasks on FastMCP 4, taught by running them.")
    scale_help = "multiply every duration (0.1 runs ten times faster); 0.1 to 10, default 1"
    # Below 0.1 a step is shorter than a poll and lessons miss what they show;
    # past 10 some tasks would ask for more than an hour.
    scale = within(float, 0.1, 10)
    parser.add_argument("--scale", type=scale, default=1.0, help=scale_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runnable = {**{n: claim(f) for n, f in LESSONS.items()},
                "all": "every lesson above, in this order, with a summary",
                **{n: f"story: {claim(f)}" for n, f in STORIES.items()}}
    for name, summary_line in runnable.items():
        command = commands.add_parser(name, help=summary_line, description=summary_line)
        # --scale after the command too; SUPPRESS keeps a value given before it.
        command.add_argument("--scale", type=scale, default=argparse.SUPPRESS, help=scale_help)
    model_help = ("deep research by a model, any pydantic-ai model string: "
                  "anthropic:claude-sonnet-4-5, google-gla:gemini-2.5-flash, test (offline)")
    commands.choices["research"].add_argument("--model", default="test",
                                              help=model_help + "; default: test")
    soak_command = commands.choices["soak"]
    soak_command.add_argument("--tasks", type=within(int, 1, 100_000), default=120)
    soak_command.add_argument("--clients", type=within(int, 1, 50), default=2,
                              help="client processes, sharing the tasks")
    soak_command.add_argument("--faults", default=",".join(FAULTS),
                              type=lambda text: tuple(text.split(",")),
                              help="which to strike, in order: worker (SIGKILL), replica (SIGKILL), "
                                   "redis (restart), paused (a worker SIGSTOPped past its claim)")
    soak_command.add_argument("--no-persistence", dest="persistent", action="store_false",
                              help="Redis without its append-only file: see what a restart loses")
    bench_help = "measure: compare, result lag, task overhead, throughput, cold start"
    bench_command = commands.add_parser("bench", help=bench_help, description=bench_help)
    bench_command.add_argument("--quick", action="store_true", help="a smaller run, in seconds")
    bench_command.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench_command.add_argument("--distributed", action="store_true",
                               help="also Redis, HTTP and workers: scaling, polling, memory")

    # The pieces the stories are made of, to run by hand in separate terminals.
    serve_command = commands.add_parser("serve", help="serve the tools over HTTP on 127.0.0.1")
    serve_command.add_argument("--port", type=within(int, 1, 65535), default=8000)
    serve_command.add_argument("--host", default="127.0.0.1",
                               help="the address to bind; beyond loopback, use --token")
    serve_command.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                               help="a name clients reach this server by (its Host header); "
                                    "others are refused. Repeat for each")
    serve_command.add_argument("--backend", default="memory://",
                               help="memory:// (this process) or redis://HOST:PORT/DB (shared)")
    serve_command.add_argument("--no-worker", action="store_true",
                               help="accept tasks but leave running them to `worker` processes")
    serve_command.add_argument("--token", action="append", metavar="NAME=TOKEN",
                               help="require bearer tokens; repeat for each client "
                                    "(or TASKS_DEMO_TOKENS=alice=...,bob=...)")
    worker_command = commands.add_parser("worker", help="run tasks for servers on a shared Redis")
    worker_command.add_argument("--backend", required=True, help="redis://HOST:PORT/DB")
    for command in (serve_command, worker_command):
        command.add_argument("--model", help=model_help)
    worker_command.add_argument("--journal", action="store_true",
                                help="also record each body's start and end in Redis (soak)")
    for flag, what in (("--metrics-port", "Docket's Prometheus metrics"),
                       ("--health-port", "a health endpoint (200 while the process answers)")):
        worker_command.add_argument(flag, type=host_port, metavar="[HOST:]PORT",
                                    help=f"serve {what} on this port (HOST: 127.0.0.1)")
    for command in (serve_command, worker_command):
        command.add_argument("--key-file", type=Path, metavar="PATH",
                             help="the key that encrypts task snapshots (the caller's token, "
                                  "every header) in the store; or FASTMCP_TASKS_ENCRYPTION_KEY. "
                                  "The same on every server and worker")
    serve_command.add_argument("--plaintext-snapshots", action="store_true",
                               help="with --token on Redis and no key: store tokens in clear")
    queue_help = "what is queued and running on a shared Redis, and which worker runs it"
    queue_command = commands.add_parser("queue", help=queue_help, description=queue_help)
    queue_command.add_argument("--backend", required=True, help="redis://HOST:PORT/DB")

    task = commands.add_parser("task", help="submit, status, watch, result, cancel: "
                                            "a client of a `serve` process, by task id")
    actions = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    client_help = {
        "submit": "submit a work task and print its id (--wait: then follow it to the end)",
        "status": "print a task's state and status message",
        "watch": "follow a task's progress until it ends",
        "result": "wait for a task's result and print it",
        "cancel": "cancel a task",
        "load": "submit many tasks over raw HTTP, follow each, print the account as JSON",
    }
    for name, summary_line in client_help.items():
        command = actions.add_parser(name, help=summary_line, description=summary_line)
        command.add_argument("--url", type=http_url, default=DEFAULT_URL)
        command.add_argument("--token", default=os.environ.get("TASKS_DEMO_TOKEN") or None,
                             type=lambda text: text or None,
                             help="bearer token (or TASKS_DEMO_TOKEN)")
        command.add_argument("--timeout", type=within(float, 0.1, 24 * 3600),
                             help="give up after this many seconds (default: 30, or as "
                                  "long as a task may run for watch, result, submit --wait)")
        if name == "load":
            command.add_argument("--count", type=within(int, 1, 100_000), default=50)
            command.add_argument("--seconds", type=within(float, 0, MAX_SECONDS), default=1.0)
            command.add_argument("--over", type=within(float, 0, 24 * 3600), default=10.0,
                                 help="spread the submissions over this many seconds")
            command.add_argument("--poll", type=within(float, 0.02, 60), default=0.5,
                                 help="seconds between two reads of a task")
        elif name == "submit":
            command.add_argument("--label", default="job", type=bounded_text(100))
            command.add_argument("--seconds", type=within(float, 0, MAX_SECONDS), default=10.0)
            command.add_argument("--steps", type=within(int, 1, MAX_STEPS), default=10)
            command.add_argument("--wait", action="store_true")
        else:
            command.add_argument("task_id", help="the id, or - to read it from stdin "
                                                 "(task submit | task watch -)")
    # An id that begins with "-" (one in 64 do) is still an id, wherever it stands.
    ids = [arg for before, arg in zip(argv[1:], argv[2:]) if re.fullmatch(r"-[\w-]{20,}", arg)
           and not before.startswith("--")] if argv[:1] == ["task"] else []
    args = parser.parse_args([f"{ID_MARK}{arg}" if arg in ids else arg for arg in argv])
    if getattr(args, "task_id", None):
        args.task_id = args.task_id.removeprefix(ID_MARK)
    if args.command == "soak" and not set(args.faults) <= set(FAULTS):
        parser.error(f"--faults takes some of {','.join(FAULTS)}, got {','.join(args.faults)}")
    backend = getattr(args, "backend", "memory://")
    if urllib.parse.urlsplit(backend).scheme.lower() not in ("memory", *SHARED):
        parser.error(f"--backend takes memory:// or redis://HOST:PORT/DB, got {backend!r}")
    if args.command == "worker" and not shared(backend):
        parser.error("a worker in its own process needs a shared backend: "
                     "--backend redis://HOST:PORT/DB")
    if args.command == "serve" and args.no_worker and not shared(backend):
        parser.error("--no-worker needs a shared backend (--backend redis://...): "
                     "with memory:// nothing else could run the tasks")
    if args.command == "serve":
        args.tokens = {}
        from_env = os.environ.get("TASKS_DEMO_TOKENS")
        for pair in args.token or (from_env.split(",") if from_env else []):
            name, _, token = pair.partition("=")
            if not name or not token:
                parser.error(f"--token takes NAME=TOKEN, got {pair!r}")
            if token in args.tokens:
                parser.error(f"{name} and {args.tokens[token]} were given the same token")
            args.tokens[token] = name
        if not args.host:
            parser.error("--host takes an address, got ''")
    return args


async def run(command: str, scale: float, **options: Any) -> bool:
    # Not a terminal: wide enough that nothing is cut, and no control codes.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        runs = [await run_one(name, scale, console, **options)
                for name in (LESSONS if command == "all" else [command])]
    finally:
        # The in-memory Redis of every lesson runs Rust threads of its own: stop
        # them while the loop runs, not in the interpreter's teardown (a CI run
        # of `all` once ended with SIGSEGV after its last line).
        from docket._redis_memory import clear_memory_servers

        await clear_memory_servers()
    if command == "all":
        console.print(summary(runs))
    return all(all(seen.checks.values()) for _, seen, _ in runs)


def check_model(model: str) -> None:
    """What a model string needs, in one line, before any task is submitted."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    try:
        infer_model(model)
    except ImportError as error:  # the provider's SDK is not installed
        extra = re.search(r"pydantic-ai-slim\[([\w-]+)\]", str(error))
        raise DemoError(f"{model} needs its provider's package: uv run --with "
                        f"'pydantic-ai-slim[{extra[1] if extra else '...'}]' tasks_demo.py "
                        f"research --model {model}") from None
    except UserError as error:  # an unknown model, or the variable to set for the key
        raise DemoError(f"{model}: {error}") from None


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


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    global RESEARCH_MODEL
    try:
        if getattr(args, "model", None):
            check_model(args.model)
            if args.command in ("serve", "worker"):
                RESEARCH_MODEL = args.model
        if args.command in ("serve", "worker"):
            use_key(args)
        if args.command == "serve":
            asyncio.run(serve(args.port, args.host, args.backend, not args.no_worker,
                              args.tokens, tuple(args.allow_host)))
        elif args.command == "worker":
            asyncio.run(worker(args.backend, args.journal, args.metrics_port, args.health_port))
        elif args.command == "queue":
            Console(width=None if sys.stdout.isatty() else 160).print(
                asyncio.run(queue(args.backend)))
        elif args.command == "task":
            for sig in LEAVE_ON:  # a client: nothing to hand over
                signal.signal(sig, leave_now)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `task watch ID | head`: just stop
            print(asyncio.run(deadline(task_command, args)))
        elif args.command == "bench":
            for sig in LEAVE_ON:
                signal.signal(sig, leave_now)
            figures = asyncio.run(bench(args.quick, args.distributed))
            wide = Console(width=None if sys.stdout.isatty() else 160)
            print(json.dumps(figures, indent=2)) if args.json else show_bench(wide, figures)
        else:
            # In memory every task dies with this process anyway: Ctrl-C leaves
            # at once (a story's processes go with it). The failure lesson
            # raises on purpose, and Docket would log each one with a traceback.
            for sig in LEAVE_ON:
                signal.signal(sig, leave_now)
            for noisy in ("docket", "fastmcp_tasks"):
                logging.getLogger(noisy).setLevel(logging.CRITICAL)
            options = {k: v for k, v in vars(args).items() if k not in ("command", "scale")}
            return 0 if asyncio.run(run(args.command, args.scale, **options)) else 1
    except (DemoError, ToolError) as error:  # ToolError: a server refused a call
        print(f"tasks_demo.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
