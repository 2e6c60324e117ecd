"""The stories: processes this program starts, talks to as a client, and strikes.

Each story is a short async function named like its subcommand, as a lesson
is, returning what it observed; every process it starts ends with it (on
failure or Ctrl-C too). Past one process: Redis, servers, workers, HAProxy.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import secrets
import shutil
import signal
import socket
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any
from pathlib import Path

from fastmcp import Client

import tasks_demo
from deploy import DemoError
from deploy.client import remote, rpc
from deploy.http import on_http
from deploy.processes import (FOLDERS, Child, child_processes, client_process,
                              client_process_of, free_port, redis_process, scrape, start_redis,
                              start_server)
from deploy import model as deep
from deploy.serving import REDELIVERY_TIMEOUT, tasks_server
from deploy.store import QUEUE
from tasks_demo import (TERMINAL, Observed, attach, call_tool_task, follow, now, past_step, room,
                        say, serving, step_of, transitions)


STORIES: dict[str, Callable[..., Awaitable[Observed]]] = {}


def story(fn: Callable[..., Awaitable[Observed]]) -> Callable[..., Awaitable[Observed]]:
    STORIES[fn.__name__] = fn
    return fn


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
        ideal=seconds,
        checks={"the client process died of SIGKILL":
                victim.process.returncode == -signal.SIGKILL,
                "it died while the body ran": tasks_demo.JOURNAL.time(task_id, "start") < killed_at
                < tasks_demo.JOURNAL.time(task_id, "done"),
                "a new process got the result": result["label"] == "K",
                "the body ran exactly once": tasks_demo.JOURNAL.of(task_id) == ["start", "done"]},
        facts={"task_id": task_id, "victim_last_said": victim.lines[-1],
               "survivor_said": survivor.lines[-1], "processes_started_in_s": started})


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


# Deep research is what tasks are for: minutes of model calls, paid per token,
# that should survive the caller (deploy/model.py).
@story
async def research(scale: float, model: Any = "test") -> Observed:
    """Deep research by a model, as one task: its steps are the task's status."""
    t0, seconds = now(), 1 * scale
    deep.RESEARCH_MODEL = model
    try:
        server = await tasks_server()
        deep.model_in_place(server)
        async with Client(server) as client:
            say(f"asking {model}" if model != "test" else "asking pydantic-ai's offline test "
                "model: it calls each tool once and answers placeholder words (--model: a real one)")
            task = await call_tool_task(client, "deep_research", {
                "topic": "solid-state batteries", "sources": 3, "seconds": seconds},
                raise_on_error=False)
            steps = [s.message for s in await follow(task, t0) if s.message]
            result = await task.result()
    finally:
        deep.RESEARCH_MODEL = None
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
