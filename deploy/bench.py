"""`bench`: what a task costs, in figures; the speed and scale targets live here.

Each section is measured on its own: one that fails becomes a marked entry
(`failed`, with the error) and the rest of the run is kept; a row whose own
checks did not hold says so (`checks_held`). The command exits non-zero only
after printing everything.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from docket.dependencies import current_execution
from fastmcp import Client, FastMCP
from fastmcp.utilities.tasks import TaskConfig
from fastmcp_tasks import TasksExtension
from rich.console import Console
from rich.table import Table

import tasks_demo
from deploy import DemoError
from deploy.client import rpc
from deploy.processes import (SCRIPT, Child, child_processes, free_port, start_redis,
                              start_server)
from deploy.serving import REDELIVERY_TIMEOUT, check_interval
from deploy.store import RedisJournal, pooled
from tasks_demo import (CONCURRENCY, POLL_INTERVAL, TERMINAL, call_tool_task, compare, now,
                        serving, work)


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
    async with Client(server):  # held open: the server's lifespan runs Docket's worker
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
        and all(tasks_demo.JOURNAL.of(t.task_id) == ["start", "done"] for t in tasks),
    }


def cold_start(quick: bool) -> list[dict]:
    """Process start to answer, for the things a learner types first."""
    python, script = sys.executable, SCRIPT
    commands = {
        "tasks_demo.py --help": [script, "--help"],
        "import fastmcp_tasks": ["-c", "import fastmcp_tasks"],
        "tasks_demo.py await (first result)": [script, "--scale", "0.1", "await"],
    }
    if quick:
        commands = {"tasks_demo.py --help": commands["tasks_demo.py --help"]}
    reps, rows = 1 if quick else 3, []
    for what, args in commands.items():
        times, held = [], True
        for _ in range(reps):
            start = now()
            held &= subprocess.run([python, *args], capture_output=True).returncode == 0
            times.append(now() - start)
        rows.append(spread_ms(what, times) | {"checks_held": held})  # exit 0: its checks held
    return rows


async def measured(figures: dict, name: str, make: Callable[[], Awaitable[Any]]) -> None:
    """One section of the figures; one that fails is marked, the rest of the run kept."""
    try:
        figures[name] = await make()
    except Exception as error:  # noqa: BLE001  (whatever it was: a marked entry, no lost run)
        figures[name] = {"failed": f"{type(error).__name__}: {error}"}


async def each(*rows: Callable[[], Awaitable[dict]]) -> list[dict]:
    """Rows measured one after another: side by side they would skew each other."""
    return [await row() for row in rows]


def held(figures: Any) -> bool:
    """Every section measured, and every row's own checks held."""
    if isinstance(figures, dict):
        return ("failed" not in figures and figures.get("checks_held") is not False
                and figures.get("every_result_once") is not False
                and all(held(v) for v in figures.values()))
    return all(held(v) for v in figures) if isinstance(figures, list) else True


async def bench(quick: bool, distributed: bool) -> dict:
    """Every figure, as plain data (printed as tables, or as JSON)."""
    from importlib.metadata import version

    scale = 0.1 if quick else 1.0

    async def compared() -> dict:
        start, seen = now(), await compare(scale)
        return seen.facts | {"scale": scale, "took_s": now() - start,
                             "checks_held": all(seen.checks.values())}

    figures = {"machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                           "fastmcp": version("fastmcp"), "fastmcp_tasks": version("fastmcp-tasks"),
                           "pydocket": version("pydocket"), "quick": quick}}
    sections = {
        "compare": compared,
        "result_lag": lambda: result_lag((0.1, 0.5) if quick else (0.1, 0.5, 1, 2, 3),
                                         reps=2 if quick else 4),
        "overhead": lambda: overhead(samples=10 if quick else 50),
        "throughput": lambda: each(*(functools.partial(throughput, n)
                                     for n in ((20,) if quick else (100, 1000)))),
        "cold_start": lambda: asyncio.to_thread(cold_start, quick),
    }
    for name, make in sections.items():
        await measured(figures, name, make)
    if distributed:
        figures["distributed"] = await bench_distributed(quick)
    return figures


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
BARE_WORKER = (f"import asyncio, sys; sys.path.insert(0, {os.path.dirname(SCRIPT)!r}); "
               "from deploy import bench; asyncio.run(bench.bare_worker(sys.argv[1]))")


async def bare_sleep(seconds: float) -> None:
    key = current_execution.get().key
    await tasks_demo.JOURNAL.note(key, "start")
    await asyncio.sleep(seconds)
    await tasks_demo.JOURNAL.note(key, "done")


async def bare_worker(backend: str) -> None:
    """A Docket worker, its settings those of `worker`, running `bare_sleep`."""
    from docket import Docket, Worker

    tasks_demo.JOURNAL = RedisJournal(backend)
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
    """Server CPU and Redis commands per request, on Redis over HTTP, against a yardstick.

    `clients` closed-loop threads for `duration` seconds each; the server is
    one `serve` process with its worker; the CPU is that process's own, the
    commands Redis's count. The yardstick is a minimal FastMCP server with the
    same tool and Docket settings (no guards, no commit-once, no journal):
    `ratio_*` is ours over it. Docket alone runs a producer and a worker in
    this process, with no HTTP and no MCP: the floor under what a task can cost.
    """
    from redis.asyncio import Redis

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
        redis = Redis.from_url(backend)
        ours, url = await start_server("--backend", backend)
        minimal = Child("minimal server", sys.executable, "-c", MINIMAL_SERVER, backend,
                        str(port := free_port()))
        await minimal.expect("serving http")
        for what, server, one, at in (
                ("minimal server: plain tools/call", minimal, plain, f"http://127.0.0.1:{port}/mcp"),
                ("minimal server: task", minimal, task, f"http://127.0.0.1:{port}/mcp"),
                ("ours: plain tools/call", ours, plain, url), ("ours: task", ours, task, url)):
            one(at)  # warm
            done, before, start = [], cpu_seconds(server.process.pid), now()
            commands = (await redis.info("stats"))["total_commands_processed"]

            def loop() -> None:
                while now() - start < duration:
                    one(at)
                    done.append(1)
            await asyncio.gather(*(asyncio.to_thread(loop) for _ in range(clients)))
            took, cpu = now() - start, cpu_seconds(server.process.pid) - before
            commands = (await redis.info("stats"))["total_commands_processed"] - commands
            rows.append({"what": what, "per_s": len(done) / took,
                         "server_cpu_ms": 1000 * cpu / len(done),
                         "redis_commands": commands / len(done)})
        await redis.aclose()
        for row in rows[2:]:  # ours, over the yardstick doing the same
            yardstick = rows[rows.index(row) - 2]
            row["ratio_cpu"] = row["server_cpu_ms"] / yardstick["server_cpu_ms"]
            row["ratio_redis"] = row["redis_commands"] / yardstick["redis_commands"]
        rows.append(await docket_alone(backend, duration, clients))
    return rows


# The yardstick: FastMCP's own example grown to the same tool, and nothing else.
MINIMAL_SERVER = (f"import sys; sys.path.insert(0, {os.path.dirname(SCRIPT)!r}); "
                  "from deploy import bench; bench.minimal_server(sys.argv[1], int(sys.argv[2]))")


def minimal_server(backend: str, port: int) -> None:
    server = FastMCP("minimal")
    server.add_extension(TasksExtension(
        url=backend, name="minimal", concurrency=CONCURRENCY,
        redelivery_timeout=REDELIVERY_TIMEOUT, minimum_check_interval=check_interval(backend)))
    server.tool(tasks_demo.work.__wrapped__, name="work", task=tasks_demo.TASK)
    print(f"serving http://127.0.0.1:{port}/mcp", flush=True)
    server.run(transport="http", host="127.0.0.1", port=port, show_banner=False,
               log_level="warning")


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


async def push_or_poll(way: str, waiting: int, seconds: float) -> dict:
    """`waiting` clients, each waiting on one task through one replica: polling tasks/get
    at the server's 20 ms, or listening. How late each saw its task end (the worker's
    journal has the end), what that cost the replica, and what it held meanwhile.

    The tasks wait queued until every client is attached (the worker starts then),
    so no client arrives after its task ended; the figures run from the worker's start
    to the last client's news."""
    import httpx2
    from redis.asyncio import Redis

    from deploy.client import MODERN_META, listened

    seen: dict[str, float] = {}
    requests, attached = 0, asyncio.Event()
    async with child_processes():
        backend = await start_redis()
        replica, url = await start_server("--backend", backend, "--no-worker")
        redis = Redis.from_url(backend, decode_responses=True)
        ids = await submit_many(url, waiting, seconds)
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx2.AsyncClient(limits=limits, timeout=60) as web:

            async def poll(task_id: str) -> None:
                nonlocal requests
                body = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get",
                        "params": {"taskId": task_id, "_meta": MODERN_META}}
                while True:
                    answer = (await web.post(url, json=body, headers={
                        "accept": "application/json, text/event-stream",
                        "mcp-protocol-version": "2026-07-28", "mcp-method": "tasks/get"})).json()
                    requests += 1
                    if answer["result"]["status"] in TERMINAL:
                        seen[task_id] = time.time()
                        return
                    await attached.wait()  # (until every client is in: one look each)
                    await asyncio.sleep(POLL_INTERVAL.total_seconds())

            async def listen(task_id: str) -> None:
                nonlocal requests
                async for _, frame in listened(web, url, [task_id]):
                    requests += frame.get("method") == "notifications/subscriptions/acknowledged"
                    if frame.get("params", {}).get("status") in TERMINAL:
                        seen[task_id] = time.time()
                        return
                    if "error" in frame:
                        raise DemoError(f"a listen stream ended: {frame['error']['message']}")

            clients = [asyncio.create_task((poll if way == "poll" else listen)(i)) for i in ids]
            while requests < waiting:  # each polled once, or each stream acknowledged
                await asyncio.sleep(0.1)
            attached.set()
            peak_connections = peak_rss = 0
            worker = Child.demo("worker", "worker", "--backend", backend, "--journal")
            await worker.expect("worker pid")
            requests_before, before, start = requests, cpu_seconds(replica.process.pid), now()
            while not all(c.done() for c in clients):
                peak_connections = max(peak_connections,
                                       (await redis.info("clients"))["connected_clients"])
                peak_rss = max(peak_rss, rss_bytes(replica.process.pid))
                await asyncio.sleep(0.2)
            took, cpu = now() - start, cpu_seconds(replica.process.pid) - before
            await asyncio.gather(*clients)
        ends = {i: float((await redis.lrange(f"journal:{i}", -1, -1))[0].split()[2]) for i in ids}
        await redis.aclose()
    lags = [seen[i] - ends[i] for i in ids]
    return {"way": f"{way}{' at 20 ms' if way == 'poll' else ''}", "clients": waiting,
            "every_end_seen": len(seen) == waiting,
            "lag_median_ms": 1000 * percentile(lags, 50), "lag_p99_ms": 1000 * percentile(lags, 99),
            "requests_per_client": (requests - requests_before) / waiting if way == "poll" else 1,
            "replica_cpu_ms_per_client_s": 1000 * cpu / (waiting * took),
            "clients_per_core": waiting * took / max(cpu, 1e-6),
            "redis_connections_peak": peak_connections, "replica_rss_mb_peak": peak_rss / 2**20}


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

    figures: dict = {}
    for name, make in {
        "per_request": lambda: per_request(1 if quick else 8),
        "scaling": lambda: each(*(functools.partial(scaling, w, per_worker * w, 0.5, bare)
                                  for w in ((1, 2) if quick else (1, 2, 4))
                                  for bare in (False, True))),
        "polling": lambda: each(*(functools.partial(polling_capacity, kind, 1 if quick else 5)
                                  for kind in ("redis", "memory"))),
        "memory": lambda: memory_per_result(200 if quick else 2000),
        # Waiting clients, polling or pushed to: the pair at one count, then push at 1,000.
        "push": lambda: each(*(functools.partial(push_or_poll, way, count, 0.05) for way, count
                               in ((("poll", 20), ("push", 20)) if quick else
                                   (("poll", 200), ("push", 200), ("push", 1000))))),
    }.items():
        await measured(figures, name, make)
    return figures


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

    def compared(c: dict) -> list[dict]:
        return [{"what": what, "took_s": c[key], "ratio_to_gather": c[key] / c["gather_s"],
                 **({"checks_held": c["checks_held"]} if key == "tasks_s" else {})}
                for what, key in (("sequential", "sequential_s"), ("asyncio.gather", "gather_s"),
                                  ("background tasks", "tasks_s"))]

    d = figures.get("distributed", {})
    for title, rows, shape in (
            ("1. Compare: 3 s + 2 s + 1 s of work", figures["compare"], compared),
            ("2. Result lag: how late a finished task is seen", figures["result_lag"], None),
            ("3. Overhead of a task, zero-length work", figures["overhead"], None),
            ("4. Throughput, submitted and collected at once", figures["throughput"], None),
            ("5. Cold start, process start to answer", figures["cold_start"], None),
            *((("6. What a request costs, Redis, 10 clients: ours against a minimal server",
                d["per_request"], None),
               ("7. Workers on Redis, 0.5 s tasks, against Docket alone", d["scaling"], None),
               ("8. tasks/get one replica answers", d["polling"], None),
               ("9. Memory kept per 10,000 finished tasks", d["memory"], None),
               ("10. Clients waiting on their tasks: polling or pushed to, one replica",
                d["push"], None)) if d else ())):
        if isinstance(rows, dict) and "failed" in rows:  # marked, and the rest still shown
            console.print(f"[red]{title}: not measured: {rows['failed']}[/]")
        else:
            console.print(table_of(title, shape(rows) if shape else rows))
