"""The kit's servers: commit-once, HTTP hardening, the store's faults, serve and worker."""

import asyncio
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import types

import httpx2
import pytest
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier

import tasks_demo as demo
from deploy import http, processes, stories, store
from deploy.client import listened, remote
from deploy import commit as commit_module
from deploy.commit import committed
from deploy.serving import running, serve, tasks_server
from deploy.testing import MODERN, needs_redis, our_children, rpc, rss_mb, rss_of, said
from test_tasks_demo import (BAD_CALLS, HERE, ON_CI, a_flood_cancelled, flood_held, one_line,
                             post, script)


"""Every claim tasks_demo.py makes, checked through what its lessons observed.

The lessons run for real at a small time scale: durations shrink, the
protocol and the order of events do not. Each test reads what a lesson
returned and asserts on the observations themselves, not only on the
lesson's own verdict.
"""


async def seen_from_second_server(first, second) -> str:
    """Submit on one server, look the task up on the other."""
    async with demo.Client(first) as a, demo.Client(second) as b:  # each runs its server
        task = await demo.call_tool_task(a, "work", {"label": "mine", "seconds": 0.01})
        await task
        try:
            return (await (await demo.attach(b, task.task_id, "work")).status()).status
        except demo.MCPError as error:
            return str(error)


def test_servers_on_one_memory_queue_share_tasks_so_lessons_use_fresh_queues():
    async def two(**options):
        return [await tasks_server(**options) for _ in range(2)]

    assert asyncio.run(seen_from_second_server(*asyncio.run(two(queue="shared")))) == "completed"
    assert asyncio.run(seen_from_second_server(*asyncio.run(two()))).endswith("not found")


def test_rate_limit_keys_on_the_token_when_there_is_one_and_forgets_old_clients():
    limit = demo.SubmissionLimit(burst=1, per_second=0.001, clients=3)
    tokens = {"tok-alice": "alice"}
    auth = StaticTokenVerifier({t: {"client_id": n} for t, n in tokens.items()})

    async def submissions(token, declared_ids):
        server = await tasks_server(auth=auth if token else None, middleware=(limit,))
        async with http.on_http(server) as url, demo.Client(url, auth=token) as client:
            outcomes = []
            for client_id in declared_ids:
                try:
                    await demo.call_tool_task(client, "work", {"label": "x", "seconds": 0},
                                              meta={"client_id": client_id})
                    outcomes.append("accepted")
                except demo.MCPError:
                    outcomes.append("refused")
            return outcomes

    # Authenticated: the declared id changes, the key (the token's client) does not.
    assert asyncio.run(submissions("tok-alice", ["x1", "x2"])) == ["accepted", "refused"]
    # Anonymous: a new declared id is a new bucket; that is all it is worth.
    assert asyncio.run(submissions(None, ["a1", "a2", "a3", "a4"])) == ["accepted"] * 4
    assert len(limit.buckets) == 3  # the least recently seen were dropped


@needs_redis
def test_without_a_key_the_token_sits_in_redis_in_clear():
    # The scan above can find a token: here, where it is stored in clear.
    token = secrets.token_urlsafe(16)
    auth = StaticTokenVerifier({token: {"client_id": "alice"}})

    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            async with running(backend=backend, auth=auth) as server, \
                    http.on_http(server) as url, demo.Client(url, auth=token) as client:
                await (await demo.call_tool_task(client, "work", {"label": "a", "seconds": 0}))
                return await stories.keys_holding(backend, token)

    held = asyncio.run(asyncio.wait_for(story(), 60))
    assert len(held) == 1 and held[0].endswith(":snapshot")


@needs_redis
def test_a_process_with_another_key_than_its_queue_refuses_to_start(tmp_path):
    (tmp_path / "a").write_text(secrets.token_urlsafe(32))
    (tmp_path / "b").write_text(secrets.token_urlsafe(32))

    async def story():
        from fastmcp_tasks.settings import tasks_settings
        from pydantic import SecretStr

        async with processes.child_processes():
            backend = await processes.start_redis()
            # The first process on the queue, sealing its probe with key a:
            tasks_settings.encryption_key = SecretStr((tmp_path / "a").read_text())
            try:
                await store.same_key_as_the_queue(backend)
            finally:
                tasks_settings.encryption_key = None
            others = [processes.Child.demo(name, *args, "--backend", backend) for name, args in (
                ("worker, key b", ("worker", "--key-file", str(tmp_path / "b"))),
                ("worker, no key", ("worker",)),
                ("server, key b", ("serve", "--port", str(processes.free_port()), "--key-file",
                                   str(tmp_path / "b"))))]
            codes = [await asyncio.to_thread(o.process.wait, 60) for o in others]
            for o in others:
                await asyncio.to_thread(o._reader.join)
            return codes, [o.lines for o in others]

    codes, said_by = asyncio.run(asyncio.wait_for(story(), 120))
    assert codes == [1, 1, 1]
    assert said_by[0][-1].startswith("tasks_demo.py: error: this process has a key, and the "
                                     "other processes on tasks-demo do not share it")
    assert "this process has no key" in said_by[1][-1]
    assert "do not share it" in said_by[2][-1]
    assert not our_children()


@needs_redis
def test_the_library_worker_command_serves_this_server():
    # The docstring of `worker` says fastmcp-tasks' own worker does the same
    # job on the module-level `mcp`: the same queue, only the URL to set.
    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            _, url = await processes.start_server("--backend", backend, "--no-worker")
            library_worker = processes.Child(
                "worker_cli", "env", f"FASTMCP_DOCKET_URL={backend}", sys.executable,
                "-m", "fastmcp_tasks.worker_cli", "worker", f"{HERE / 'tasks_demo.py'}:mcp")
            async with remote(url, None) as client:
                task = await demo.call_tool_task(client, "work", {"label": "w", "seconds": 0.1})
                result = await asyncio.wait_for(task.result(), 60)
            return result.data["pid"], library_worker.process.pid

    ran_in, worker_pid = asyncio.run(story())
    assert ran_in == worker_pid  # `env` execs python: the worker keeps Popen's pid
    assert not our_children()


# A task that is still running however slow the machine: what a process left
# behind when it stopped at once (and what a watcher still has to watch).
LONG = {"label": "left-running", "seconds": 600, "steps": 1000}


@needs_redis
def test_sigterm_on_a_redis_serve_drains_and_twice_leaves_at_once():
    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            (_, reader), first = await asyncio.gather(  # (at once: each takes seconds)
                processes.start_server("--backend", backend, "--no-worker"),
                processes.start_server("--backend", backend))
            outcomes = {}
            for presses in (1, 2):
                server, url = first if presses == 1 else await processes.start_server(
                    "--backend", backend)
                async with remote(url, None) as client:
                    task = await demo.call_tool_task(client, "work", LONG if presses == 2 else {
                        "label": "drain-1", "seconds": 3, "steps": 30})
                    await demo.follow(task, demo.now(), until=demo.past_step(1))
                if presses == 2:  # a client following the task through this server
                    watch = processes.Child.demo("watch", "task", "watch", "--url", url,
                                            task.task_id)
                    await watch.expect("step")
                for press in range(presses):
                    server.process.send_signal(signal.SIGTERM)
                    await server.expect("draining")
                    await asyncio.sleep(0.6)  # a second, separate signal
                code = await asyncio.to_thread(server.process.wait, 30)
                async with remote(reader, None) as client:
                    state = (await (await demo.attach(client, task.task_id, "work")).status()
                             ).status
                outcomes[presses] = (code, state, server.lines[-1])
            watched = (await asyncio.to_thread(watch.process.wait, 30), watch.lines)
            return outcomes, watched

    outcomes, (watch_code, watch_said) = asyncio.run(asyncio.wait_for(story(), 120))
    # Once: its worker finished the running task, then it left.
    assert outcomes[1] == (0, "completed", "drained")
    # Twice: it left a ten-minute task running, for another worker to take over.
    code, state, _ = outcomes[2]
    assert code == 128 + signal.SIGTERM and state == "working"
    # Its server gone, the watching client ends in one line (not an httpx2 traceback).
    assert watch_code == 1 and not any("Traceback" in line for line in watch_said)
    assert watch_said[-1].startswith("tasks_demo.py: error: cannot reach http://"), watch_said
    assert not our_children()


@needs_redis
def test_ctrl_c_on_a_redis_worker_drains_and_twice_leaves_at_once():
    uv_binary = os.environ.get("UV") or shutil.which("uv")
    if uv_binary is None and not ON_CI:
        pytest.skip("uv is not installed")

    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            # As a learner runs it, under uv, Ctrl-C to the whole process group; started
            # with the server (each takes seconds).
            first = processes.Child("worker under uv", uv_binary, "run", "--quiet",
                                    str(HERE / "tasks_demo.py"), "worker", "--backend",
                                    backend, own_group=True)
            (_, url), _ = await asyncio.gather(
                processes.start_server("--backend", backend, "--no-worker"),
                first.expect("worker pid=", timeout=120))
            outcomes = {}
            for presses in (1, 2):
                if presses == 1:
                    worker = first
                else:
                    worker = processes.Child.demo("worker", "worker", "--backend", backend)
                await worker.expect("worker pid=", timeout=120)
                async with remote(url, None) as client:
                    # Once: a task longer than the redelivery timeout, which a
                    # drain must outlast (one cut short there left it working).
                    task = await demo.call_tool_task(client, "work", LONG if presses == 2 else {
                        "label": "drain-1", "seconds": 6, "steps": 60})
                    await demo.follow(task, demo.now(), until=demo.past_step(1))
                    for press in range(presses):
                        if presses == 1:
                            os.killpg(worker.process.pid, signal.SIGINT)
                        else:
                            worker.process.send_signal(signal.SIGINT)
                        await worker.expect("draining")
                        await asyncio.sleep(0.6)  # a second, separate press
                    code = await asyncio.to_thread(worker.process.wait, 30)
                    state = (await task.status()).status
                warned = [line for line in worker.lines if line.startswith("warning:")]
                outcomes[presses] = (code, state, worker.lines[-1], warned)
            return outcomes

    outcomes = asyncio.run(asyncio.wait_for(story(), 150))
    # Each worker said once that this Redis (no AOF, no RDB saves) forgets every
    # task on a restart. (On a persistent one it says nothing: the busy-port
    # worker of the Redis-restart test prints its one error line alone.)
    assert all(len(o[3]) == 1 and "a Redis restart loses every task" in o[3][0]
               for o in outcomes.values()), outcomes
    # One Ctrl-C: the running task finished first.
    assert outcomes[1][1:3] == ("completed", "drained")
    # Twice: it left a ten-minute task running, for another worker to take over.
    code, state, *_ = outcomes[2]
    assert code == 130 and state == "working"
    assert not our_children()


def test_bad_input_over_http_gets_a_clear_error_and_holds_nothing():
    async def story():
        # One worker slot: a bad call that took it would stall the good one at the end.
        server = await tasks_server(concurrency=1)
        async with http.on_http(server) as url:
            answers = {}
            for case, (arguments, _) in BAD_CALLS.items():
                answers[case] = await asyncio.to_thread(
                    rpc, url, "tools/call", {"name": "work", "arguments": arguments}, "work")
            answers["unknown tool"] = await asyncio.to_thread(
                rpc, url, "tools/call", {"name": "nope", "arguments": {}}, "nope")
            for case, task_id in (("unknown task id", "no-such-task"), ("empty task id", ""),
                                  ("huge task id", "x" * 10_000)):
                answers[case] = await asyncio.to_thread(rpc, url, "tasks/get",
                                                        {"taskId": task_id})
            answers["malformed JSON"] = await asyncio.to_thread(
                post, url, b'{"jsonrpc": "2.0", "id": 1, "method": ', **{"mcp-method": "tools/call"})
            before = rss_mb()
            for _ in range(100):  # 100 MB of labels: refused before they are parsed
                answers["label of 1 MB"] = await asyncio.to_thread(
                    rpc, url, "tools/call", {"name": "work", "arguments": {
                        "label": "x" * 2**20, "seconds": 1}}, "work")
            grown = rss_mb() - before
            async with demo.Client(url) as client:  # the server still answers, slot free
                good = await demo.call_tool_task(client, "work", {"label": "ok", "seconds": 0})
                result = await asyncio.wait_for(good.result(), 10)
            return answers, grown, result.data

    answers, grown_mb, good = asyncio.run(asyncio.wait_for(story(), 120))
    for case, (_, names) in BAD_CALLS.items():
        status, answer = answers[case]
        assert names in said(answer), case
        assert answer["result"]["isError"] and "taskId" not in answer["result"], case
    assert "Unknown tool" in said(answers["unknown tool"][1])
    for case in ("unknown task id", "empty task id", "huge task id"):
        assert answers[case][0] == 400 and "not found" in said(answers[case][1]), case
    assert answers["malformed JSON"][0] == 400 and "Parse error" in said(answers["malformed JSON"][1])
    # Refused by its declared length, before it is read: a 413, or, if the
    # client was still sending, the connection closed under it.
    status, text = answers["label of 1 MB"]
    assert (status, text) == (413, "Request body too large") or status == 0
    assert grown_mb < 50, f"memory grew {grown_mb:.0f} MB over 100 refused 1 MB calls"
    assert good["label"] == "ok"


def test_foreign_host_and_origin_are_refused():
    async def story():
        async with running() as server, http.on_http(server) as url, http.on_http(
                server, names=("mcp.example.com",)) as named:  # serve --allow-host
            ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                               "params": {"_meta": MODERN}}).encode()
            port = url.split(":")[2].split("/")[0]
            return {
                "a name it was given": await asyncio.to_thread(
                    post, named, ping, Host=f"mcp.example.com:{named.split(':')[2][:-4]}",
                    **{"mcp-method": "tools/list"}),
                "own host": await asyncio.to_thread(post, url, ping, **{"mcp-method": "tools/list"}),
                "foreign host": await asyncio.to_thread(
                    post, url, ping, Host=f"evil.example.com:{port}", **{"mcp-method": "tools/list"}),
                "foreign origin": await asyncio.to_thread(
                    post, url, ping, Origin="http://evil.example.com", **{"mcp-method": "tools/list"}),
                "own origin": await asyncio.to_thread(
                    post, url, ping, Origin=f"http://localhost:{port}", **{"mcp-method": "tools/list"}),
            }

    answers = asyncio.run(story())
    assert answers["own host"][0] == 200 and answers["own origin"][0] == 200
    assert answers["a name it was given"][0] == 200
    assert answers["foreign host"][0] == 421
    assert answers["foreign origin"][0] == 403


def test_serving_beyond_loopback_without_tokens_warns(capsys):
    async def start_and_stop() -> str:
        serving = asyncio.create_task(serve(processes.free_port(), "0.0.0.0", "memory://",
                                            True, {}))
        printed = ""
        while "serving http" not in printed and not serving.done():
            await asyncio.sleep(0.05)
            out, err = capsys.readouterr()
            printed += out + err
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return printed

    printed = asyncio.run(asyncio.wait_for(start_and_stop(), 30))
    assert "warning: serving on 0.0.0.0 without --token" in printed
    assert "serving http://127.0.0.1:" in printed


def test_the_python_sdk_recipe_in_the_docs_runs_as_written(tmp_path):
    doc = (HERE / "docs" / "any-client.md").read_text()
    section = doc[doc.index("## From the Python `mcp` SDK"):]
    (tmp_path / "client.py").write_text(re.search(r"```python\n(.*?)```", section, re.S)[1])

    async def story():
        async with running() as server, http.on_http(server) as url:
            return await asyncio.to_thread(
                subprocess.run, [sys.executable, str(tmp_path / "client.py"), url],
                capture_output=True, text=True, timeout=90)

    result = asyncio.run(story())
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()
    assert said[0] == "protocol 2026-07-28"
    assert any(line.startswith("  work: task ") for line in said)
    assert "  result: {'result': 'deploy: approved by mcp-sdk'}" in said
    assert "  input_required" in said and "  failed: the storage backend is unreachable" in said
    assert said[-1] == "  raised MCPError: the storage backend is unreachable"


def test_the_curl_recipe_in_the_docs_runs_as_written():
    doc = (HERE / "docs" / "any-client.md").read_text()
    recipe = "set -euo pipefail\n" + "\n".join(re.findall(r"```bash\n(.*?)```", doc, re.S))

    async def story():
        async with running() as server, http.on_http(server) as url:
            return await asyncio.to_thread(
                subprocess.run, ["bash", "-c", recipe], env={**os.environ, "URL": url},
                capture_output=True, text=True, timeout=60)

    result = asyncio.run(story())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "working"
    assert '"status":"completed"' in lines[1] and '"label":"curl"' in lines[1]
    assert "deploy: approved by curl" in lines
    assert lines[-1] == "cancelled"
    pushed = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    assert pushed[0]["method"] == "notifications/subscriptions/acknowledged"
    assert {f["method"] for f in pushed[1:]} == {"notifications/tasks"}
    assert pushed[-1]["params"]["status"] == "completed"
    assert pushed[-1]["params"]["result"]["structuredContent"]["label"] == "pushed"


# -- guarantees under faults: late runs, slow clients, a store that fails -----


def test_a_task_body_returns_the_result_that_stands_whatever_its_own_run_does():
    # Another run of the same task (redelivered while this one was paused)
    # commits first; this run then returns, or raises, as it wakes.
    from docket.dependencies import current_execution

    async def late(ends: str) -> dict:
        run, task = current_execution.get(), demo.get_task_context()
        async with run.docket.redis() as redis:
            await redis.set(run.docket.key(f"committed:{task.task_id}"),
                            json.dumps({"by": "the first run"}))
        if ends == "raising":
            raise ConnectionError("woke up to a dead connection")
        return {"by": "this late run"}

    async def story():
        server = await tasks_server()
        server.tool(demo.task_body(committed(late)), name="late", task=demo.TASK)
        async with demo.Client(server) as client:
            return [(await (await demo.call_tool_task(client, "late", {"ends": ends}))).data
                    for ends in ("returning", "raising")]

    assert asyncio.run(asyncio.wait_for(story(), 30)) == [{"by": "the first run"}] * 2


def test_a_run_that_no_longer_holds_its_task_reports_no_more_progress():
    from docket.dependencies import current_execution

    async def taken_over(steps: int, ctx: demo.Context = demo.CurrentContext()) -> str:
        run = current_execution.get()
        for step in range(1, steps + 1):
            if step == 3:  # another worker claims the task, as after a pause past the claim
                async with run.docket.redis() as redis:
                    await redis.hset(run.docket.runs_key(run.key), "worker", "another")
            await demo.report(ctx, step, steps, f"step {step}/{steps}")
        await run.progress.sync()
        return run.progress.message  # the last progress that reached the store

    async def story():
        server = await tasks_server()
        server.tool(demo.task_body(committed(taken_over)), name="taken", task=demo.TASK)
        async with demo.Client(server) as client:
            return (await (await demo.call_tool_task(client, "taken", {"steps": 10}))).data

    assert asyncio.run(asyncio.wait_for(story(), 30)) == "step 2/10"


@needs_redis
def test_a_store_that_lost_its_data_says_so_and_work_ending_into_it_keeps_nothing(caplog):
    async def story():
        from redis.asyncio import Redis

        async with processes.child_processes():
            backend = await processes.start_redis()
            admin = Redis.from_url(backend)
            async with running(backend=backend, queue="emptied") as server, \
                    demo.Client(server) as client:
                tasks = [await demo.call_tool_task(client, "work", {
                    "label": f"lost-{i}", "seconds": 1, "steps": 5}) for i in range(3)]
                for task in tasks:  # each body runs
                    await demo.follow(task, demo.now(), until=demo.past_step(1))
                await admin.flushall()  # what a Redis restarted without persistence holds
                ends = [await demo.JOURNAL.end_of(t.task_id, timeout=10) for t in tasks]
                answers = []
                for task in tasks:
                    try:
                        answers.append(str(await task.status()))
                    except demo.MCPError as error:
                        answers.append(str(error))
                outbox = await admin.lrange("emptied:outbox", 0, -1)
            await admin.aclose()
            return ends, answers, outbox

    ends, answers, outbox = asyncio.run(asyncio.wait_for(story(), 60))
    assert ends == ["done"] * 3  # the bodies ran to their end…
    assert outbox == []  # …and posted nothing into the emptied store
    for answer in answers:  # every caller of a lost id is told why
        assert re.search(r"not found: the task store restarted empty \(noticed .*\); a task "
                         r"from before then was lost", answer), answer
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks_demo"]
    assert sum("the task store restarted empty" in line for line in lines) == 1, lines
    assert sum("has no record of it any more" in line for line in lines) == 3, lines
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"


def test_submitting_tasks_builds_no_validator_a_task():
    from fastmcp.utilities.types import get_cached_typeadapter

    async def story():
        server = await tasks_server()
        async with demo.Client(server) as client:
            await demo.call_tool_task(client, "work", {"label": "first", "seconds": 0})
            before = get_cached_typeadapter.cache_info()
            for i in range(50):
                await demo.call_tool_task(client, "work", {"label": f"t{i}", "seconds": 0})
            return before, get_cached_typeadapter.cache_info()

    before, after = asyncio.run(asyncio.wait_for(story(), 60))
    assert after.misses == before.misses  # each submit found its tool's validator built


class Link:
    """A TCP proxy between a worker and Redis, to cut and restore."""

    def __init__(self, to_port: int):
        self.to_port, self.port, self.pipes, self.server = to_port, processes.free_port(), [], None

    async def restore(self) -> None:
        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            writer.close()

        async def connect(reader, writer):
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.to_port)
            self.pipes += [writer, upstream]
            await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))

        self.server = await asyncio.start_server(connect, "127.0.0.1", self.port)

    async def cut(self) -> None:
        self.server.close()
        for writer in self.pipes:
            writer.transport.abort()
        self.pipes.clear()
        await self.server.wait_closed()


@needs_redis
async def tasks_in_turn(url: str, count: int, at_once: int = 20) -> str:
    """`count` zero-second tasks, `at_once` at a time, each batch to its end: the
    last one's id."""
    call = {"name": "work", "arguments": {"label": "gone", "seconds": 0, "steps": 1}}
    for _ in range(count // at_once):
        answers = await asyncio.gather(*(
            asyncio.to_thread(rpc, url, "tools/call", call, "work") for _ in range(at_once)))
        last = answers[-1][1]["result"]["taskId"]
        while rpc(url, "tasks/get", {"taskId": last})[1]["result"]["status"] != "completed":
            await asyncio.sleep(0.01)
    return last


def test_a_memory_server_gives_back_what_its_expired_tasks_held():
    # memory://'s store hides a key that expired but never frees it: a `serve`
    # grew by every task it had ever run (~5 KB each, for tasks this small).
    # Rounds of tasks, each waited out past its lifetime: the first sets the
    # server's high-water mark (Python keeps its arenas), the next add nothing.
    lifetime = 1

    async def story():
        async with processes.child_processes():
            server, url = await processes.start_server(
                "--backend", "memory://", "--results-for", str(lifetime))
            started, settled = rss_of(server.process.pid), []
            for _ in range(3):
                last = await tasks_in_turn(url, 400)
                while "error" not in rpc(url, "tasks/get", {"taskId": last})[1]:
                    await asyncio.sleep(0.05)  # its result expired; its own keys live
                await asyncio.sleep(2 * lifetime)  # a lifetime more, swept each half
                deadline = time.perf_counter() + 15  # (a busy machine may sweep late)
                while settled and rss_of(server.process.pid) > settled[0] + 2 \
                        and time.perf_counter() < deadline:
                    await asyncio.sleep(0.1)
                settled.append(rss_of(server.process.pid))
            return started, settled

    started, settled = asyncio.run(asyncio.wait_for(story(), 120))
    # MB for 800 tasks: what bounded caches take (~1 MB), not ~5 KB a task
    assert settled[-1] - settled[0] < 2.5, (started, settled)
    assert settled[-1] <= 1.2 * started, (started, settled)  # back within 20 % of the start


def test_a_task_that_outruns_its_keys_unpolled_keeps_its_result(monkeypatch):
    # fastmcp-tasks renews a task's own keys at each poll, for twice the results'
    # lifetime: a body that ran longer with nobody polling ended into a task
    # nobody could find (by default past 30 minutes; here past 4 seconds).
    from datetime import timedelta

    from fastmcp_tasks import creation, handlers

    for module in (creation, handlers):  # the lifetime below is for this test only
        monkeypatch.setattr(module, "TASK_MAPPING_TTL_BUFFER_SECONDS",
                            module.TASK_MAPPING_TTL_BUFFER_SECONDS)

    async def story():
        async with running(results_for=timedelta(seconds=2)) as server, \
                demo.Client(server) as client:
            task = await demo.call_tool_task(client, "work", {
                "label": "long", "seconds": 5, "steps": 1})
            ended = await demo.JOURNAL.end_of(task.task_id, timeout=30)  # nobody polled
            status = await task.status()  # within the result's lifetime of 2 s
            return ended, status.status, (await task.result()).structured_content

    ended, state, result = asyncio.run(asyncio.wait_for(story(), 60))
    assert (ended, state, result["label"]) == ("done", "completed", "long")


def test_a_partition_longer_than_the_retries_never_changes_a_seen_result(monkeypatch):
    # Worker A is cut off from Redis as its body ends, for longer than a commit
    # once retried; B takes the task over and is still running when A's
    # link comes back. Whatever each does, one result is seen, and it stays.
    from docket.dependencies import current_execution

    from deploy import serving

    # The story's clocks, compressed: a claim lapses after 1 s (not 5), and the commit's
    # waits between tries are a tenth as long (its ~6 s of retries once: 0.63 s).
    monkeypatch.setattr(serving, "REDELIVERY_TIMEOUT", serving.timedelta(seconds=1))
    monkeypatch.setattr(commit_module, "asyncio", types.SimpleNamespace(
        sleep=lambda seconds: asyncio.sleep(seconds / 10), create_task=asyncio.create_task))
    started, release = {"A": asyncio.Event(), "B": asyncio.Event()}, {
        "A": asyncio.Event(), "B": asyncio.Event()}

    async def partitioned() -> dict:
        run = "B" if current_execution.get().redelivered else "A"
        started[run].set()
        await release[run].wait()
        return {"by": run}

    def noting_the_end(body):  # (outside commit-once: how each run ended)
        async def run(*args, **kwargs):
            name = "B" if current_execution.get().redelivered else "A"
            try:
                result = await body(*args, **kwargs)
                ended[name] = f"returned {result}"
                return result
            except Exception as error:
                ended[name] = f"raised {error!r}"
                raise
        return functools.wraps(body)(run)

    ended = {}

    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            link = Link(int(backend.split(":")[2].split("/")[0]))
            await link.restore()
            through = backend.replace(f":{link.to_port}/", f":{link.port}/")
            servers = []
            for url in (through, backend):  # A's server, then (once A runs it) B's
                server = await tasks_server(backend=url, queue=QUEUE)
                server.tool(demo.task_body(noting_the_end(committed(partitioned))),
                            name="partitioned", task=demo.TASK)
                servers.append(server)
            async with demo.Client(servers[0]) as a:
                task = await demo.call_tool_task(a, "partitioned", {})
                await started["A"].wait()
                await link.cut()
                release["A"].set()  # A's body ends: its commit cannot reach the store
                async with demo.Client(servers[1]) as b:
                    await started["B"].wait()  # A's claim lapsed: B runs the task again
                    await asyncio.sleep(1.5)  # the partition: longer than the old retries
                    await link.restore()
                    release["B"].set()
                    reader = await demo.attach(b, task.task_id, "partitioned")
                    seen, after = [], 0
                    while after < 50:  # until both runs have ended, and 50 reads more
                        status = await reader.status()
                        if status.status in demo.TERMINAL:
                            seen.append(json.dumps(status.result, sort_keys=True))
                        after += len(ended) == 2
                        await asyncio.sleep(0.01)
                    async with Redis.from_url(backend) as redis:
                        outbox = await redis.lrange(f"{QUEUE}:outbox", 0, -1)
            return seen, outbox

    from redis.asyncio import Redis

    from deploy.store import QUEUE

    seen, outbox = asyncio.run(asyncio.wait_for(story(), 90))
    # The run cut off from the store did not end the task in an error: it waited for
    # the store, then returned the result that stands (its own, or B's).
    assert ended["A"].startswith("returned {'by': "), ended
    assert ended["B"] == ended["A"]
    assert len(set(seen)) == 1 and '"isError": false' in seen[0], set(seen)  # never another
    assert len(outbox) == 1  # and its effect, once


def test_a_task_body_commits_any_result_a_tool_may_return():
    # Your tool may return a model, a date: the committed result is their JSON.
    from datetime import datetime, timezone

    from pydantic import BaseModel

    class Report(BaseModel):
        title: str
        at: datetime

    async def report() -> Report:
        return Report(title="done", at=datetime(2026, 12, 3, tzinfo=timezone.utc))

    async def story():
        server = await tasks_server()
        server.tool(demo.task_body(committed(report)), name="report", task=demo.TASK)
        async with demo.Client(server) as client:
            return (await (await demo.call_tool_task(client, "report", {}))).structured_content

    assert asyncio.run(asyncio.wait_for(story(), 30)) == {
        "title": "done", "at": "2026-12-03T00:00:00Z"}


@needs_redis
def test_cancel_stops_a_body_asked_to_report_a_thousand_times_a_second_on_redis(monkeypatch):
    async def story():  # (in memory: the lesson's tests)
        async with processes.child_processes():
            async with running(backend=await processes.start_redis()) as server:
                return await a_flood_cancelled(server, monkeypatch)

    assert flood_held(*asyncio.run(asyncio.wait_for(story(), 60)))


def test_slow_and_idle_clients_are_cut_off_and_others_still_served(monkeypatch):
    import socket

    monkeypatch.setattr(http, "SEND_WITHIN", 1.0)
    headers = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json"
               b"\r\ncontent-length: 100\r\n\r\n")

    def client(port: int, sent: bytes, trickle: bool = False) -> tuple[bytes, float]:
        """Send `sent` (a byte every 0.2 s if `trickle`), then wait: what came back, when."""
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            try:
                for piece in ([bytes([b]) for b in sent] if trickle else [sent]):
                    connection.sendall(piece)
                    time.sleep(0.2 if trickle else 0)
                return connection.recv(1000), time.monotonic() - start
            except OSError:  # it hung up on us mid-send
                return b"(hung up)", time.monotonic() - start

    async def story():
        async with running() as server, http.on_http(server) as url:
            port = int(url.split(":")[2].split("/")[0])
            cases = {"idle": (b"",), "half the headers": (headers[:30],),
                     "headers a byte at a time": (headers * 3, True),
                     "part of the body": (headers + b"{" * 10,)}
            answers = await asyncio.gather(
                *(asyncio.to_thread(client, port, *case) for case in cases.values()),
                asyncio.to_thread(rpc, url, "tools/list", {}))
        return dict(zip([*cases, "a normal client"], answers))

    seen = asyncio.run(asyncio.wait_for(story(), 60))
    # Each ended within seconds (without the guard, none ends at all) ...
    assert all(took < 5 for _, took in list(seen.values())[:4]), seen
    # ... an idle one closed, a slow one told why ...
    assert seen["idle"][0] == b""
    assert seen["half the headers"][0].startswith(b"HTTP/1.1 408")
    assert seen["part of the body"][0].startswith(b"HTTP/1.1 408")
    assert seen["headers a byte at a time"][0] in (b"(hung up)", b"") or \
        seen["headers a byte at a time"][0].startswith(b"HTTP/1.1 408")
    # ... and the others were served meanwhile.
    assert seen["a normal client"][0] == 200


@needs_redis
def test_a_store_that_is_frozen_full_or_down_is_named_in_one_line(monkeypatch, caplog):
    monkeypatch.setattr(store, "STORE_DEADLINE", 1.0)

    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            redis_pid = processes.CHILDREN[-1].pid
            from redis.asyncio import Redis

            admin = Redis.from_url(backend)
            async with running(backend=backend) as server, http.on_http(server) as url:
                ask = functools.partial(asyncio.to_thread, rpc, url)
                task_id = (await ask("tools/call", {"name": "work", "arguments": {
                    "label": "x", "seconds": 0}}, "work"))[1]["result"]["taskId"]
                seen = {}
                os.kill(redis_pid, signal.SIGSTOP)
                start = demo.now()
                try:  # (thawed whatever happens: a thread blocked on it would hang the test)
                    seen["frozen"] = await asyncio.wait_for(ask("tasks/get", {"taskId": task_id}),
                                                            10)
                finally:
                    os.kill(redis_pid, signal.SIGCONT)
                frozen_s = demo.now() - start
                logged = len(caplog.records)
                # Full while a task runs: its end cannot be written, Docket's loops fail.
                running_id = (await ask("tools/call", {"name": "work", "arguments": {
                    "label": "z", "seconds": 0.5, "steps": 5}}, "work"))[1]["result"]["taskId"]
                await admin.config_set("maxmemory", 1)  # and the policy: noeviction
                seen["full: submit"] = await ask("tools/call", {"name": "work", "arguments": {
                    "label": "y", "seconds": 0}}, "work")
                seen["full: read"] = await ask("tasks/get", {"taskId": task_id})
                ended = await demo.JOURNAL.end_of(running_id, timeout=10)  # its end unwritten
                seen["full: the running one"] = await ask("tasks/get", {"taskId": running_id})
                for _ in range(200):  # until Docket's own loops have met the full store
                    if any(r.name.startswith("docket") for r in caplog.records[logged:]):
                        break
                    await asyncio.sleep(0.05)
                logged_while_full = "\n".join(caplog.handler.format(r)
                                               for r in caplog.records[logged:])
                await admin.config_set("maxmemory", 0)
                seen["room again"] = await ask("tasks/get", {"taskId": task_id})
                await admin.aclose()
                os.kill(redis_pid, signal.SIGKILL)
                seen["down"] = await ask("tasks/get", {"taskId": task_id})
                cli = await asyncio.to_thread(script, "task", "status", "--url", url, task_id)
            return seen, frozen_s, cli, logged_while_full, ended

    import functools

    seen, frozen_s, cli, logged, ended = asyncio.run(asyncio.wait_for(story(), 90))
    assert ended == "done"
    said_by = {case: said(answer) for case, (_, answer) in seen.items()}
    assert said_by["frozen"] == "task store unavailable: no answer within 1 s (is Redis frozen?)"
    assert frozen_s < 5
    assert said_by["full: submit"] == "task store unavailable: Redis is full (maxmemory)"
    # Reads go on answering while writes are refused: the finished task, the running one.
    assert seen["full: read"][1]["result"]["status"] in ("working", "completed")
    assert seen["full: the running one"][1]["result"]["status"] == "working"
    # The log names the fault in lines, no traceback (what Docket's own loops log
    # while full depends on what they try then: test_a_store_fault_... logs for sure).
    assert "Traceback" not in logged, logged
    assert all("task store: Redis is full (maxmemory)" in line
               for line in logged.splitlines() if "docket" in line), logged
    assert seen["room again"][1]["result"]["status"] in ("working", "completed")
    assert said_by["down"] == "task store unavailable: Redis is unreachable"  # not where it is
    assert cli.returncode == 1
    assert one_line(cli.stderr).endswith("/mcp: task store unavailable: Redis is unreachable")


def test_a_store_fault_in_any_log_is_one_named_line_at_most_every_ten_seconds(caplog):
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import OutOfMemoryError

    asyncio.run(tasks_server())  # (which names them so, in every process of the kit)
    logger, run = logging.getLogger("docket.worker"), secrets.token_hex(4)
    for error in (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
                  OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
                  RedisConnectionError("Connection refused")):
        try:
            raise error
        except Exception:
            logger.exception("Error in scheduler loop %s", run)  # (this run's own line)
    for _ in range(3):  # Docket's own line, each second while Redis is away
        logger.warning("Redis is unavailable, sleeping for 1 second... %s", run)
    assert [r.getMessage() for r in caplog.records if r.name == "docket.worker"] == [
        f"Error in scheduler loop {run}: task store: Redis is full (maxmemory)",
        f"Error in scheduler loop {run}: task store: Redis is unreachable",
        f"Redis is unavailable, sleeping for 1 second... {run}"]
    assert "Traceback" not in caplog.text


def test_ids_that_cannot_be_task_ids_are_not_found_without_a_traceback():
    async def story():
        async with running() as server, http.on_http(server) as url:
            answers = {}
            for case, literal in (("lone surrogate", '"\\ud800"'), ("NUL", '"a\\u0000b"'),
                                  ("10 kB", json.dumps("x" * 10_000)), ("number", "7")):
                body = ('{"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": '
                        f'{{"taskId": {literal}, "_meta": {json.dumps(MODERN)}}}}}').encode()
                answers[case] = await asyncio.to_thread(post, url, body,
                                                        **{"mcp-method": "tasks/get"})
            return answers

    for case, (status, answer) in asyncio.run(story()).items():
        assert status == 400 and answer["error"]["code"] == -32602, case
        if case != "number":  # (that one: "Invalid request parameters", from the SDK)
            assert said(answer).startswith("Task ") and said(answer).endswith("not found"), case
        assert len(said(answer)) < 200, case  # the id is not echoed whole


def test_forty_oversized_and_forty_largest_bodies_at_once_hold_little_memory():
    # What once took a server from 119 MB to 4.4 GB: 40 bodies of 4 MiB of `{}`
    # at once. Now refused unread; and 40 of the largest size admitted parse
    # into a few MB each.
    def body(size: int) -> bytes:
        head = ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "work", '
                '"arguments": {"label": "x", "seconds": 1, "junk": [')
        tail = f'{{}}]}}, "_meta": {json.dumps(MODERN)}}}}}'
        return (head + "{}," * ((size - len(head) - len(tail)) // 3) + tail).encode()

    def flood(url: str, data: bytes) -> list:
        def one(_):
            try:
                return post(url, data, **{"mcp-method": "tools/call", "mcp-name": "work"})[0]
            except OSError:  # refused before it was all sent: the connection closes
                return "closed"
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            return list(pool.map(one, range(40)))

    async def story():
        async with processes.child_processes():
            server, url = await processes.start_server()
            pid, before = server.process.pid, rss_of(server.process.pid)
            refused = await asyncio.to_thread(flood, url, body(4 * 2**20))
            admitted = await asyncio.to_thread(flood, url, body(demo.MAX_BODY))
            grown = rss_of(pid) - before
            normal = await asyncio.to_thread(rpc, url, "tools/list", {})
        return refused, admitted, grown, normal

    import concurrent.futures

    refused, admitted, grown_mb, normal = asyncio.run(asyncio.wait_for(story(), 120))
    assert set(refused) <= {413, "closed"}  # refused as it arrived
    assert set(admitted) == {200}  # read and parsed: an isError answer ("junk" is no argument)
    assert grown_mb < 200, f"RSS grew {grown_mb:.0f} MB"
    assert normal[0] == 200


# -- what the server adds to every request ------------------------------------


def test_a_plain_call_lists_no_tools_and_its_headers_are_still_checked():
    # The SDK checks Mcp-Param-* headers against the tool's input schema; with
    # no lookup it would list every tool on every call to find that schema.
    from typing import Annotated

    from pydantic import Field

    async def story():
        server = await tasks_server()

        def where(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]
                  ) -> str:
            return region

        server.tool(where)  # added after the server was built: the lookup still finds it
        listed = []
        original = server.list_tools

        async def counting(*args, **kwargs):
            listed.append(1)
            return await original(*args, **kwargs)

        server.list_tools = counting
        async with http.on_http(server) as url:
            call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "where", "arguments": {"region": "eu"},
                "_meta": {**MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
            answers = {header: await asyncio.to_thread(
                post, url, call, **{"mcp-method": "tools/call", "mcp-name": "where",
                                    **({"mcp-param-region": header} if header else {})})
                for header in ("eu", "us", None)}
            lists = len(listed)  # (before the check below, which lists them itself)
            schemas_match = all(
                server._mcp_server.get_tool_input_schema(t.name) == t.parameters
                for t in await original())
        return answers, lists, schemas_match

    answers, lists, schemas_match = asyncio.run(asyncio.wait_for(story(), 60))
    assert answers["eu"][0] == 200 and said(answers["eu"][1]) == "eu"
    assert answers["us"][0] == 400 and answers["us"][1]["error"]["code"] == -32020
    assert answers[None][0] == 400 and "missing" in said(answers[None][1])
    assert lists == 0  # three calls, not one tools/list
    assert schemas_match


def test_a_lesson_server_holds_the_tools_themselves_not_a_mount_of_them():
    # A mounted server resolves each call through a provider of the mount's
    # (a seventh of a plain call): the tools are added to each server instead.
    async def story():
        server = await tasks_server()
        return {type(await server.get_tool(t.name)).__name__
                for t in await demo.mcp.list_tools(run_middleware=False)}, server.providers

    kinds, providers = asyncio.run(story())
    assert kinds == {"FunctionTool"}
    assert not [p for p in providers if type(p).__name__ == "FastMCPProvider"]


@needs_redis
def test_a_client_reads_through_a_redis_restart_and_a_busy_port_is_one_line():
    # Each step waits on the one before it, not on the clock: the task parks on
    # a question (it holds no worker), the client process reads it, Redis goes
    # away while it does, comes back, and only then is the question answered.
    class FirstRead(demo.Middleware):
        def __init__(self):
            self.seen = asyncio.Event()

        async def on_request(self, context, call_next):
            if context.method == "tasks/get":
                self.seen.set()
            return await call_next(context)

    async def answer_when(go: asyncio.Event):
        async def approver(message, response_type, params, context):
            await go.wait()
            return {"approved": True, "approver": "ops"}
        return approver

    async def story():
        async with processes.child_processes():
            port, folder = processes.free_port(), tempfile.mkdtemp(prefix="tasks-demo-redis-")
            processes.FOLDERS.append(folder)
            redis = processes.redis_process(port, True, folder)
            await redis.expect("Ready to accept connections")
            backend, first_read, go = f"redis://127.0.0.1:{port}/0", FirstRead(), asyncio.Event()
            async with running(backend=backend, middleware=(first_read,)) as server, \
                    http.on_http(server) as url, \
                    demo.Client(url, elicitation_handler=await answer_when(go)) as client:
                task = await demo.call_tool_task(client, "approve", {"action": "read on"})
                result = processes.Child.demo("result", "task", "result", "--url", url, task.task_id)
                await asyncio.wait_for(first_read.seen.wait(), 60)  # the client is reading
                redis.process.terminate()
                await asyncio.to_thread(redis.process.wait)
                await result.expect("reading again", timeout=60)  # it saw the store go
                redis = processes.redis_process(port, True, folder)
                await redis.expect("Ready to accept connections")
                go.set()
                answered = (await asyncio.wait_for(task.result(), 60)).data
                await result.finish(timeout=60)
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", 0))
                    taken.listen()
                    busy = await asyncio.to_thread(
                        script, "worker", "--backend", backend,
                        "--metrics-port", str(taken.getsockname()[1]))
            return answered, result.lines, busy

    import socket
    import tempfile

    answered, said, busy = asyncio.run(asyncio.wait_for(story(), 150))
    assert any("task store unavailable" in line and line.endswith("reading again")
               for line in said), said
    assert answered == "read on: approved by ops"
    assert "read on: approved by ops" in said[-1]  # the same result, after the outage
    assert busy.returncode == 1
    assert "--metrics-port: cannot listen on 127.0.0.1" in one_line(busy.stderr)


def test_headers_over_the_cap_are_refused_whole_or_in_pieces():
    # One block of 60 KB arrives in a single read: h11's own limit let it through.
    async def story():
        async with running() as server, http.on_http(server) as url:
            ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                               "params": {"_meta": MODERN}}).encode()
            return [(await asyncio.to_thread(post, url, ping, **{
                "mcp-method": "tools/list", "x-padding": "a" * size}))[0]
                for size in (1000, http.MAX_HEADERS, 60_000)]

    assert asyncio.run(asyncio.wait_for(story(), 60)) == [200, 431, 431]


# -- push: subscriptions/listen on the raw wire ------------------------------------


async def heard(http_client, url: str, task_ids: list[str], **options) -> list[tuple[float, dict]]:
    """A listen stream's frames until each task's record is final, or the stream ends."""
    frames, final = [], set()
    async for at, frame in listened(http_client, url, task_ids, **options):
        frames.append((at, frame))
        params = frame.get("params", {})
        if params.get("status") in demo.TERMINAL:
            final.add(params["taskId"])
        if final >= set(task_ids) and task_ids:
            break
    return frames


@needs_redis
def test_a_listener_on_one_replica_hears_tasks_submitted_through_another_run_by_a_worker():
    async def story():
        async with processes.child_processes():
            backend = await processes.start_redis()
            worker = processes.Child.demo("worker", "worker", "--backend", backend)
            (replica, a), (_, b), _ = await asyncio.gather(  # (at once: each takes seconds)
                *(processes.start_server("--backend", backend, "--no-worker") for _ in "ab"),
                worker.expect("worker pid"))
            async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=None)) as web:

                async def submit(seconds: float) -> str:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                        "name": "work", "arguments": {"label": "pushed", "seconds": seconds,
                                                      "steps": 2}, "_meta": MODERN}}
                    answer = await web.post(b, json=body, headers={
                        "accept": "application/json, text/event-stream", "mcp-name": "work",
                        "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call"})
                    return answer.json()["result"]["taskId"]

                ids = await asyncio.gather(*(submit(0.2) for _ in range(200)))
                # Each task heard through replica A, a listener each, all at once.
                streams = await asyncio.gather(*(heard(web, a, [i]) for i in ids))
                record = rpc(a, "tasks/get", {"taskId": ids[0]})[1]["result"]
                refused = {"no capability": await heard(web, a, ids[:1], meta={
                               **MODERN, "io.modelcontextprotocol/clientCapabilities": {}}),
                           "unknown id": [],
                           "drained": []}
                long = await submit(600)
                async for _, frame in listened(web, a, ["no-such-task", long]):
                    refused["drained"].append(frame)
                    if frame.get("method") == "notifications/subscriptions/acknowledged":
                        refused["unknown id"] = frame["params"]["notifications"]["taskIds"]
                    if frame.get("method") == "notifications/tasks":
                        replica.process.send_signal(signal.SIGTERM)  # a drain: streams end
            return ids, streams, record, refused, long

    ids, streams, record, refused, long = asyncio.run(asyncio.wait_for(story(), 150))
    for task_id, frames in zip(ids, streams):
        ack, *records = [frame for _, frame in frames]
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"]["taskIds"] == [task_id]
        # Nothing but the task's records, each tagged with the stream's id…
        assert {f["method"] for f in records} == {"notifications/tasks"}
        assert {f["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
                for f in [ack, *records]} == {"listen-1"}
        assert all(f["params"]["taskId"] == task_id for f in records)
        # …and its end, once: completed, the result inlined.
        assert [f["params"]["status"] for f in records].count("completed") == 1
        assert records[-1]["params"]["status"] == "completed"
    first_end = streams[0][-1][1]["params"]
    assert first_end["result"] == record["result"]  # what tasks/get then said
    # Without the tasks capability: -32021, naming the extension.
    (_, error), = refused["no capability"]
    assert error["error"]["code"] == -32021
    assert "io.modelcontextprotocol/tasks" in error["error"]["data"]["requiredCapabilities"][
        "extensions"]
    assert refused["unknown id"] == [long]  # an id it may not see is left out, unsaid
    # A drain ends the stream with the listen's answer, tagged: not a dropped stream.
    assert refused["drained"][-1]["result"]["_meta"][
        "io.modelcontextprotocol/subscriptionId"] == "listen-1"
    assert not our_children()


def test_a_listener_hears_only_its_own_tenants_tasks():
    tokens = {"tok-alice": "alice", "tok-bob": "bob"}
    auth = StaticTokenVerifier({t: {"client_id": n} for t, n in tokens.items()})

    async def story():
        server = await tasks_server(auth=auth)
        async with http.on_http(server) as url, httpx2.AsyncClient() as web:
            async with demo.Client(url, auth="tok-alice") as alice:
                task = await demo.call_tool_task(alice, "work", {"label": "hers", "seconds": 0})
            acks = {}
            for token in tokens:
                async for _, frame in listened(web, url, [task.task_id], token=token):
                    acks[tokens[token]] = frame["params"]["notifications"]["taskIds"]
                    break
            # Bob's stream, agreed to nothing, ends at once with its answer: no connection held.
            bobs = await asyncio.wait_for(heard(web, url, [task.task_id], token="tok-bob"), 10)
            return acks, task.task_id, [frame for _, frame in bobs]

    acks, task_id, bobs = asyncio.run(asyncio.wait_for(story(), 60))
    assert acks == {"alice": [task_id], "bob": []}
    assert [f.get("method", "the answer") for f in bobs] == [
        "notifications/subscriptions/acknowledged", "the answer"]


def test_a_listen_stream_outlives_the_store_deadline_that_bounds_a_request(monkeypatch):
    monkeypatch.setattr(store, "STORE_DEADLINE", 0.5)  # a request, not a stream, has one

    async def story():
        server = await tasks_server()
        async with http.on_http(server) as url, httpx2.AsyncClient() as web:
            async with demo.Client(url) as client:
                task = await demo.call_tool_task(client, "work", {"label": "long",
                                                                  "seconds": 1.5, "steps": 3})
                return await heard(web, url, [task.task_id])

    frames = asyncio.run(asyncio.wait_for(story(), 60))
    assert frames[-1][1]["params"]["status"] == "completed"
