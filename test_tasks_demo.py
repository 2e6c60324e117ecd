"""Every claim tasks_demo.py makes, checked through what its lessons observed.

The lessons run for real at a small time scale: durations shrink, the
protocol and the order of events do not. Each test reads what a lesson
returned and asserts on the observations themselves, not only on the
lesson's own verdict. In memory and in one process, except where a test runs
the script as a learner does; the kit's tests are in deploy/tests/.
"""

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tasks_demo as demo

SCALE = 0.2  # a 3 s task takes 0.6 s: every step still lasts several polls
HERE = Path(__file__).parent
ON_CI = bool(os.environ.get("CI"))
# The _meta a 2026-07-28 client sends, declaring the tasks extension:
MODERN = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
          "io.modelcontextprotocol/clientCapabilities": {
              "extensions": {"io.modelcontextprotocol/tasks": {}}}}
BAD_CALLS = {  # tools/call arguments -> what the answer must name
    "seconds huge": ({"label": "x", "seconds": 1e12}, "less than or equal to 3600"),
    "seconds negative": ({"label": "x", "seconds": -1}, "greater than or equal to 0"),
    "seconds NaN as a string": ({"label": "x", "seconds": "nan"}, "finite number"),
    "steps zero": ({"label": "x", "seconds": 1, "steps": 0}, "greater than or equal to 1"),
    "steps negative": ({"label": "x", "seconds": 1, "steps": -1}, "greater than or equal to 1"),
    "steps huge": ({"label": "x", "seconds": 1, "steps": 10**9}, "less than or equal to 1000"),
    "label too long": ({"label": "x" * 101, "seconds": 1}, "at most 100 characters"),
}


def post(url: str, body: bytes, **headers: str) -> tuple[int, dict | str]:
    """One raw POST with any body and headers: the wire as any client sends it."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run(lesson, *args, **kwargs) -> demo.Observed:
    # A bound, so that a lesson that hangs fails instead of stalling the suite.
    return asyncio.run(asyncio.wait_for(lesson(*args, **kwargs), timeout=90))


def holds(seen: demo.Observed) -> bool:
    return all(seen.checks.values())


# -- the lessons --------------------------------------------------------------


def test_compare_ratios_measured_in_one_run():
    scale = 0.2
    seen = run(demo.compare, scale)
    f = seen.facts
    # No way can beat the work itself: sequential pays for all three, the
    # concurrent ways for the longest. (What tasks cost over gather is a
    # figure, `bench`'s, not a claim a busy machine could break.)
    assert f["sequential_s"] >= 6 * scale
    assert f["gather_s"] >= 3 * scale and f["tasks_s"] >= 3 * scale
    assert f["tasks_over_gather"] == f["tasks_s"] / f["gather_s"]
    assert holds(seen)


def test_await_returns_each_result_and_what_the_server_advertises():
    seen = run(demo.await_, SCALE)
    assert seen.facts["first_result"] == {"label": "T0", "seconds": 2 * SCALE, "steps": 1,
                                          "pid": os.getpid()}
    assert seen.facts["poll_every_ms"] == 20  # our TaskConfig, sent to the client
    assert seen.facts["result_kept_for_min"] == 15  # Docket's execution TTL
    assert holds(seen)


def test_200_concurrent_tasks_each_returned_once_to_its_caller():
    seen = run(demo.await_, SCALE, count=200)
    assert seen.facts["tasks"] == 200
    assert holds(seen)


def test_poll_sees_states_progress_and_failures_in_order():
    updates = []
    seen = run(demo.poll, SCALE, on_sample=lambda label, sample: updates.append(label))
    for label, states in seen.facts["transitions"].items():
        assert states[-1] == "completed", label
        assert "working" in states, label  # seen running, not only queued
        assert states.index("working") < states.index("completed")
    for label, steps in seen.facts["steps_seen"].items():
        assert steps == sorted(steps), label  # a short step may fall between two polls
    assert seen.facts["steps_seen"]["A"]
    done = seen.facts["ended_at_s"]
    assert done["B"] < done["A"]
    for label, at in seen.facts["seen_ended_at_s"].items():
        assert at >= done[label], label  # nobody sees an end before it happens
    # Partial results: the first failure, named while the suite still ran.
    ran = re.fullmatch(r"(\d+)/20 run, \d+ passed, failed: test_7(?:, test_14)?, at .* s",
                       seen.facts["first_failure_seen"])[1]
    assert int(ran) < 20  # the server's own count: the suite still ran
    assert set(updates) == {"A", "B", "suite"}  # the live table was fed
    assert seen.facts["suite_report"] == {"suite": "checkout", "passed": 18,
                                          "failed": ["test_7", "test_14"]}
    assert holds(seen)


def test_push_tells_every_change_polling_saw_sooner_for_one_request():
    seen = run(demo.push, SCALE)
    assert seen.facts["requests"]["push"] == 1  # the listen itself: no tasks/get
    assert seen.facts["requests"]["polling (tasks/get)"] >= 3
    assert seen.facts["changes_seen"]["push"] >= seen.facts["changes_seen"]["polling"]
    assert holds(seen)


def listening_client(server, elicitation_handler=None):
    listener = demo.Listener()
    return listener, demo.Client(server, extensions=[listener], message_handler=listener,
                                 elicitation_handler=elicitation_handler)


@contextlib.asynccontextmanager
async def listening_to_a_task(seconds: float, steps: int):
    """A lesson server, its Push, a client that listens, and a task of `work`."""
    async with demo.serving() as server:
        listener, client = listening_client(server)
        async with client:
            task = await demo.call_tool_task(client, "work", {"label": "w", "seconds": seconds,
                                                              "steps": steps})
            yield server._mcp_server._request_handlers["subscriptions/listen"].handler.__self__, \
                listener, client, task


def test_push_tells_a_question_the_answer_and_a_cancel_each_once():
    async def approver(message, response_type, params, context):
        return {"approved": True, "approver": "dana"}

    async def story():
        async with demo.serving() as server:
            hear, client = listening_client(server, elicitation_handler=approver)
            async with client:
                asking = await demo.call_tool_task(client, "approve", {"action": "ship"})
                doomed = await demo.call_tool_task(client, "work", {
                    "label": "doomed", "seconds": 60, "steps": 600})
                records, answering = [], None
                async for record in demo.listen(client, hear, [asking.task_id, doomed.task_id],
                                                timeout=30):
                    records.append(record)
                    if record.status == "input_required":
                        answering = asyncio.ensure_future(asking.result())  # the handler answers
                    if demo.step_of(record.status_message) == 3:
                        await doomed.cancel()
                await answering
                final = [await demo.attach(client, t.task_id, "approve") for t in (asking, doomed)]
                return records, hear.asked, [(await t.status()) for t in final], asking.task_id
    records, asked, final, asking = asyncio.run(asyncio.wait_for(story(), 60))
    assert asked == 0  # every record came by push
    of = {i: [(r.status, r.status_message) for r in records if r.task_id == i]
          for i in {r.task_id for r in records}}
    question = [r for r in records if r.status == "input_required"]
    assert len(question) == 1 and [ask["params"]["message"] for ask in question[0]
                                   .input_requests.values()] == ["Approve 'ship'?"]
    states = [s for s, _ in of[asking]]
    # Asked, answered (it runs again: working), done; the end pushed once, as tasks/get says.
    assert states.index("input_required") < len(states) - 1 - states[::-1].index("working")
    assert states[-1] == "completed" and states.count("completed") == 1
    pushed_end = [r for r in records if r.task_id == asking][-1]
    assert pushed_end.result == final[0].result  # the end, inlined, equals tasks/get's
    doomed = [i for i in of if i != asking][0]
    assert [s for s, _ in of[doomed]][-1] == "cancelled"
    steps = [demo.step_of(m) for _, m in of[doomed] if demo.step_of(m)]
    assert steps == sorted(steps) and steps[-1] >= 3  # forwards only


def test_listen_polls_a_server_that_does_not_push_and_names_an_id_it_may_not_see():
    async def story():
        async with demo.serving() as pushing:
            hear, client = listening_client(pushing)
            async with client:
                task = await demo.call_tool_task(client, "work", {"label": "x", "seconds": 0})
                try:
                    [r async for r in demo.listen(client, hear, [task.task_id, "no-such-id"])]
                except demo.MCPError as error:
                    refused = str(error)
        server = demo.GuardedFastMCP("polled only")  # FastMCP's own: it answers polls only
        server.add_extension(demo.TasksExtension(name=f"plain-{os.urandom(4).hex()}"))
        demo.journaled_tools(server, await demo.mcp.list_tools())
        hear, client = listening_client(server)
        async with client:
            task = await demo.call_tool_task(client, "work", {"label": "y", "seconds": 0.2,
                                                              "steps": 2})
            records = [r async for r in demo.listen(client, hear, [task.task_id], timeout=30)]
        return refused, records, hear.asked

    refused, records, asked = asyncio.run(asyncio.wait_for(story(), 60))
    assert "no-such-id not found" in refused  # left out of the ack, then tasks/get said so
    assert records[-1].status == "completed" and records[-1].result["structuredContent"][
        "label"] == "y"
    assert asked >= len(records)  # every record came by tasks/get


def test_listen_catches_up_by_tasks_get_when_the_stream_ends_midway():
    async def story():
        async with listening_to_a_task(0.5, 5) as (push, listener, client, task):
            records = []
            async for record in demo.listen(client, listener, [task.task_id], timeout=30):
                records.append((listener.asked, record))
                if len(records) == 1:
                    push.close()  # the server ends the stream (a drain): no more frames
            return records

    records = asyncio.run(asyncio.wait_for(story(), 60))
    assert records[0][0] == 0  # the first, pushed
    assert records[-1][1].status == "completed" and records[-1][0] > 0  # the end, asked for
    steps = [demo.step_of(r.status_message) for _, r in records if demo.step_of(r.status_message)]
    assert steps == sorted(steps)


def test_a_listener_that_leaves_leaves_nothing_behind_on_the_server():
    async def story():
        async with listening_to_a_task(2, 20) as (push, listener, client, task):
            counts = []
            for cycles in (1, 30):  # (the first starts what runs anyway: the task, push)
                for _ in range(cycles):  # a client opens a stream, hears, and leaves
                    records = demo.listen(client, listener, [task.task_id])
                    await anext(records)
                    await records.aclose()
                for _ in range(10):  # what was cancelled, finished
                    await asyncio.sleep(0.01)
                counts.append(len(asyncio.all_tasks()))
            return *counts, push.watching, push.channels, push.unconfirmed

    before, after, watching, channels, unconfirmed = asyncio.run(asyncio.wait_for(story(), 60))
    assert after <= before  # no task of a stream outlives it
    assert watching == channels == unconfirmed == {}


def test_a_listener_that_stops_reading_is_dropped_and_stalls_no_other(monkeypatch):
    from mcp.server.session import ServerSession

    wedged, notify = [], ServerSession.send_notification

    async def stops_reading(self, notification, related_request_id=None):
        # The first stream to be sent a task's record stops reading from then on.
        if notification.method == "notifications/tasks":
            wedged[:] = wedged or [related_request_id]
            if related_request_id == wedged[0]:
                await asyncio.sleep(3600)
        await notify(self, notification, related_request_id)

    monkeypatch.setattr(ServerSession, "send_notification", stops_reading)

    async def story():
        async with listening_to_a_task(1, 10) as (push, listener, client, task):
            push.send_within = 0.5
            stuck = asyncio.ensure_future(client.session.send_request(
                demo.SubscriptionsListenRequest(params=demo.SubscriptionsListenRequestParams(
                    notifications=demo.SubscriptionFilter(taskIds=[task.task_id]))),
                demo.SubscriptionsListenResult, request_read_timeout_seconds=30))
            while not wedged:
                await asyncio.sleep(0.01)
            records = [r async for r in demo.listen(client, listener, [task.task_id])]
            try:
                await asyncio.wait_for(stuck, 10)
                ended = "gracefully"
            except demo.MCPError as error:
                ended = str(error)
        return records, listener.asked, ended, push.watching, push.channels

    records, asked, ended, watching, channels = asyncio.run(asyncio.wait_for(story(), 60))
    # The other stream heard every step and the end, by push alone…
    assert asked == 0 and records[-1].status == "completed"
    assert [demo.step_of(r.status_message) for r in records if demo.step_of(
        r.status_message)] == list(range(1, 11))
    assert "listen stream dropped" in ended  # …and the one that stopped reading was cut off,
    assert watching == {} and channels == {}  # holding nothing once both ended


def test_reconnect_work_went_on_while_nobody_was_connected():
    seen = run(demo.reconnect, SCALE)
    # Progress had moved on when we came back (to the end, on a slow machine).
    assert 2 <= seen.facts["step_when_closing"] < seen.facts["step_when_reopening"] <= 10
    assert seen.checks["the new client, and a teammate's, got one result"]
    assert holds(seen)


def test_cancel_stops_the_body():
    seen = run(demo.cancel, SCALE)
    assert seen.facts["body_ended"] == "cancelled"
    assert seen.facts["body_stopped_after_cancel_ms"] >= 0  # stopped by the cancel, after it
    assert seen.facts["result"].startswith("raised") and "cancelled" in seen.facts["result"]
    assert holds(seen)


def test_failure_both_kinds():
    seen = run(demo.failure, SCALE)
    tool_error, bug, protocol = (seen.facts[k] for k in ("bad_input", "bug", "backend_down"))
    assert tool_error == {"state": "completed", "is_error": True,
                          "says": "the input was rejected by the tool", "code": None}
    assert bug["state"] == "completed" and bug["is_error"]
    assert "division by zero" in bug["says"]
    assert protocol == {"state": "failed", "is_error": False,
                        "says": "the storage backend is unreachable", "code": -32603}


def test_input_round_trip():
    seen = run(demo.input_, SCALE)
    assert seen.facts["seen_by_polling"][-1] == "input_required"
    assert seen.facts["then"] == "completed"
    assert seen.facts["result"] == "deploy v2: approved by dana"
    assert holds(seen)


def test_limits_queue_and_rate_limit():
    seen = run(demo.limits, 0.2)
    assert seen.facts["accepted"] == ["alice-0", "alice-1", "alice-2",
                                      "bob-0", "bob-1", "bob-2", "bob-3"]
    assert [x.split(":")[0] for x in seen.facts["refused"]] == ["bob-4", "bob-5"]
    # Tasks waited in the queue, and the client saw them there: the last of
    # the seven waits three waves, many polls long.
    assert seen.facts["polls_that_saw_queued"] > 0
    assert holds(seen)


def test_priority_bulk_work_leaves_a_slot_for_interactive_work():
    seen = run(demo.priority, SCALE)
    starts, ends = seen.facts["bulk_started_at_s"], seen.facts["bulk_ended_at_s"]
    # Two at a time: the third bulk task starts only once one of the first two ended.
    assert starts[2] >= min(ends[:2])
    assert holds(seen)


def test_a_plain_tool_answers_inline_and_is_never_a_task():
    async def story():
        async with demo.serving() as server, demo.Client(server) as client:
            answer = (await client.call_tool("uppercase", {"text": "hello"})).data
            with pytest.raises(demo.ToolError, match="did not run as a task"):
                await demo.call_tool_task(client, "uppercase", {"text": "hello"})
            return answer

    assert asyncio.run(story()) == "HELLO"


def test_attach_to_an_unknown_id_is_not_found():
    async def attach_unknown():
        async with demo.serving() as server, demo.Client(server) as client:
            await demo.attach(client, "no-such-task", "work")

    with pytest.raises(demo.MCPError, match="not found"):
        asyncio.run(attach_unknown())


def test_the_host_guard_is_strict_in_every_mode_a_server_may_be_started_in():
    # "auto" would check Host only on a loopback address: on 0.0.0.0, no check.
    async def status_of(mode: object) -> int:
        app, sent = demo.mcp.http_app(host_origin_protection=mode), []
        scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp",
                 "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
                 "server": ("10.0.0.5", 8000), "client": ("10.0.0.9", 40000),
                 "headers": [(b"host", b"evil.example.com:8000"),
                             (b"content-type", b"application/json")]}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    assert [asyncio.run(status_of(mode)) for mode in (False, "auto", True)] == [421] * 3


def test_the_server_block_alone_runs_under_fastmcp_run_and_guards_itself(tmp_path):
    # Everything above `# END OF SERVER`, copied into a file of its own, served the
    # way FastMCP users serve a module-level server: no `serve`, no demo code.
    source = (HERE / "tasks_demo.py").read_text()
    (tmp_path / "mine.py").write_text(source[:source.index("\n# END OF SERVER")] + "\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fastmcp = Path(sys.executable).with_name("fastmcp")
    server = subprocess.Popen([str(fastmcp), "run", "mine.py:mcp", "--transport", "http",
                               "--port", str(port), "--no-banner"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.1)
        def rpc(method: str, params: dict, **headers: str) -> dict:
            body = {"jsonrpc": "2.0", "id": 1, "method": method,
                    "params": {**params, "_meta": MODERN}}
            return post(url, json.dumps(body).encode(), **{"mcp-method": method}, **headers)[1]

        names = sorted(t["name"] for t in rpc("tools/list", {})["result"]["tools"])
        task_id = rpc("tools/call", {"name": "work", "arguments": {"label": "mine",
                      "seconds": 0.1}}, **{"mcp-name": "work"})["result"]["taskId"]
        while (record := rpc("tasks/get", {"taskId": task_id})["result"])["status"] == "working":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                           "params": {"_meta": MODERN}}).encode()
        refused = {
            "foreign host": post(url, ping, Host=f"evil.example.com:{port}",
                                 **{"mcp-method": "tools/list"})[0],
            "foreign origin": post(url, ping, Origin="http://evil.example.com",
                                   **{"mcp-method": "tools/list"})[0],
            "body over the cap": post(url, b" " * (demo.MAX_BODY + 1),
                                      **{"mcp-method": "tools/list"})[0]}
    finally:
        server.kill()
        server.wait()
    assert names == sorted(["work", "uppercase", "approve", "reindex"])
    assert record["status"] == "completed"
    assert record["result"]["structuredContent"]["label"] == "mine"
    assert refused == {"foreign host": 421, "foreign origin": 403, "body over the cap": 413}


def test_journal_keeps_bounded_memory():
    journal = demo.Journal()
    for i in range(journal.events.maxlen + 5):
        journal.events.append((i, f"t{i}", "start"))
    assert len(journal.events) == journal.events.maxlen
    assert journal.of("t0") == [] and journal.of(f"t{i}") == ["start"]


# -- the script as a learner runs it ---------------------------------------


def script(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "tasks_demo.py"), *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_all_runs_every_lesson_and_prints_the_summary():
    # At 0.3, the shortest phase a lesson must see lasts several polls, also
    # on a loaded machine (at 0.1, `all` once failed here under load).
    result = script("--scale", "0.3", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Summary" in result.stdout
    for name in demo.LESSONS:
        assert re.search(rf"│ {re.escape(name)}\s+│ ✓", result.stdout), name
    assert "\x1b[" not in result.stdout  # piped: plain text, no control codes
    assert "Traceback" not in result.stderr


def test_readme_teaches_exactly_the_lessons_the_script_has():
    readme = (HERE / "README.md").read_text()
    taught = re.findall(r"^- \*\*`([\w-]+)`\*\*: ", readme, re.M)
    assert taught == list(demo.LESSONS)


def in_process(args: list[str], capsys) -> tuple[int, str, str]:
    """main(args) as the script runs it, in this process: (exit status, stdout, stderr)."""
    # main() installs its own Ctrl-C handler, and a `task` command SIGPIPE's default.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGPIPE)}
    try:
        code = demo.main(args)
    except SystemExit as leaving:
        code = leaving.code
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args", [
    [], ["--scale", "0", "all"], ["--scale", "0.01", "poll"], ["--scale", "-1", "all"], ["--scale", "abc", "all"],
    ["--scale", "inf", "all"], ["--scale", "nan", "all"], ["poll", "--scale", "nan"],
])
def test_bad_input_is_one_line_and_exit_2(args, capsys):
    code, out, err = in_process(args, capsys)
    assert code == 2 and out == ""
    assert re.match(r"tasks_demo\.py( \w+)?: error: ", one_line(err))


def test_the_script_itself_answers_bad_input_in_one_line():
    result = script("no-such-demo")
    assert result.returncode == 2 and result.stdout == ""
    assert "no such choice 'no-such-demo' (see --help)" in one_line(result.stderr)


@pytest.mark.parametrize("args, says", [
    (["pol"], "no such choice 'pol': did you mean 'poll'?"),
    (["task", "lod"], "no such choice 'lod': did you mean 'load'?"),
])
def test_a_mistyped_command_gets_the_nearest_one(args, says, capsys):
    code, _, err = in_process(args, capsys)
    assert code == 2 and says in one_line(err)


def test_ctrl_c_mid_lesson_exits_130_at_once():
    # `poll` at full scale keeps a 3 s task running; a graceful worker
    # shutdown would wait for it. Interrupt as soon as the lesson has started.
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "poll"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    while "poll" not in process.stdout.readline():  # until the lesson is under way
        assert process.poll() is None
    time.sleep(0.3)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.perf_counter() - sent < 1.0
    assert "Traceback" not in stderr and "interrupted" in stderr


def uv(*args: str) -> str:
    binary = os.environ.get("UV") or shutil.which("uv")
    if binary is None and not ON_CI:
        pytest.skip("uv is not installed")
    result = subprocess.run([binary, *args], cwd=HERE, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def locked(path: Path, roots: list[dict]) -> dict[tuple[str, str], dict]:
    """Every package a lock file pins that `roots` need, by (name, version)."""
    import tomllib

    packages = tomllib.loads(path.read_text())["package"]
    found, todo = {}, list(roots)
    while todo:
        edge = todo.pop()
        for package in packages:
            if package["name"] != edge["name"] or edge.get("version", package["version"]) \
                    != package["version"] or (package["name"], package["version"]) in found:
                continue
            found[package["name"], package["version"]] = package
            todo += package.get("dependencies", [])
            for extra in edge.get("extra", []) + edge.get("extras", []):
                todo += package.get("optional-dependencies", {}).get(extra, [])
    return found


def script_pins() -> dict[tuple[str, str], dict]:
    import tomllib

    script_lock = HERE / "tasks_demo.py.lock"
    return locked(script_lock, tomllib.loads(script_lock.read_text())["manifest"]["requirements"])


def test_the_script_lock_pins_exactly_what_uv_lock_pins():
    # `uv run tasks_demo.py` installs from tasks_demo.py.lock; `uv run pytest`
    # from uv.lock. Read from the files alone: the registry has no say.
    import tomllib

    script = script_pins()
    project = next(p for p in tomllib.loads((HERE / "uv.lock").read_text())["package"]
                   if p["name"] == "tasks-demo")
    tested = locked(HERE / "uv.lock", project["dependencies"])
    assert set(script) == set(tested), set(script) ^ set(tested)
    for pin, package in script.items():  # the same files, to the hash
        assert package == tested[pin], pin
    assert ("fastmcp-tasks", "4.1.4") in script and ("pydocket", "0.27.2") in script


def test_both_locks_are_current_for_what_the_files_declare():
    # Offline: only what the files say is compared, never the registry. A
    # dependency added to the header or pyproject.toml without relocking fails here.
    uv("lock", "--check", "--offline")
    uv("lock", "--script", "tasks_demo.py", "--check", "--offline")


def test_the_script_runs_on_the_distributions_the_tests_run_on():
    # What is installed, not what is planned: the script's own environment
    # (built from its lock, as `uv run tasks_demo.py` does) against this one.
    uv("sync", "--script", "tasks_demo.py", "--locked", "--quiet")
    python = uv("python", "find", "--script", "tasks_demo.py").strip()
    listing = ("import importlib.metadata as m; print('\\n'.join(sorted("
               "f\"{d.metadata['Name'].lower().replace('_', '-')}=={d.version}\" "
               "for d in m.distributions())))")
    theirs = set(subprocess.run([python, "-c", listing], capture_output=True, text=True,
                                check=True).stdout.split())
    ours = set(subprocess.run([sys.executable, "-c", listing], capture_output=True,
                              text=True, check=True).stdout.split())
    dev_only = {f"{name}=={version}" for (name, version) in
                set(locked(HERE / "uv.lock", [{"name": "pytest"}, {"name": "pytest-xdist"}]))
                - set(script_pins())}
    assert theirs == ours - dev_only, theirs ^ (ours - dev_only)


def imports_of(source: str) -> set[str]:
    """The top-level packages a source imports, beyond the standard library."""
    imported = set(re.findall(r"^\s*(?:from|import) (\w+)", source, re.M))
    return imported - set(sys.stdlib_module_names) - {"__future__"}


def test_the_file_imports_only_what_it_declares():
    import tomllib

    source = (HERE / "tasks_demo.py").read_text()
    block = re.search(r"^# /// script\n(.*?)^# ///$", source, re.S | re.M)[1]
    header = tomllib.loads("".join(line[2:] + "\n" for line in block.splitlines()))
    declared = {re.split(r"[\[<>=]", d)[0].replace("-", "_") for d in header["dependencies"]}
    kit = "".join(p.read_text() for p in (HERE / "deploy").glob("*.py")
                  if not p.name.startswith("test"))  # (testing.py: pytest, a dev dependency)
    # Import names that differ from their distributions' (fastmcp[tasks] brings
    # fastmcp_tasks; pydantic_ai comes as pydantic-ai-slim); `deploy` is the kit.
    named = {"docket": "pydocket", "fastmcp_tasks": "fastmcp", "pydantic_ai": "pydantic_ai_slim"}
    for imported in (imports_of(source) - {"deploy"}, imports_of(kit) - {"deploy", "tasks_demo"}):
        assert {named.get(name, name) for name in imported} <= declared, imported - declared
    # The server a reader copies imports the stack alone: no Redis, no kit, no terminal.
    server = imports_of(source[:source.index("\n# END OF SERVER")])
    assert server <= {"fastmcp", "fastmcp_tasks", "docket", "mcp", "mcp_types", "pydantic"}
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    assert header["dependencies"] == project["dependencies"]


def test_bad_input_gets_the_same_answer_plain_and_as_a_task():
    async def both(arguments):
        async with demo.serving() as server:
            async with demo.Client(server, mode="legacy") as plain:
                as_plain = await plain.call_tool("work", arguments, raise_on_error=False)
            async with demo.Client(server) as client:
                as_task = await client.session.call_tool("work", arguments, allow_claimed=True)
        return as_plain, as_task

    for case, (arguments, names) in BAD_CALLS.items():
        as_plain, as_task = asyncio.run(both(arguments))
        assert as_plain.is_error and as_task.is_error, case
        assert names in as_plain.content[0].text and names in as_task.content[0].text, case


def test_approve_asks_a_client_on_the_older_handshake_too():
    asked = []

    async def approver(message, response_type, params, context):
        asked.append(message)
        return {"approved": True, "approver": "dana"}

    async def story():
        async with demo.serving() as server:
            async with demo.Client(server, mode="legacy", elicitation_handler=approver) as old:
                plain = (await old.call_tool("approve", {"action": "migrate"})).data
            async with demo.Client(server, elicitation_handler=approver) as new:
                task = await demo.call_tool_task(new, "approve", {"action": "deploy"})
                tasked = (await task).data
        return plain, tasked

    plain, tasked = asyncio.run(story())
    assert plain == "migrate: approved by dana"  # asked with ctx.elicit() on the open call
    assert tasked == "deploy: approved by dana"  # asked with an InputRequiredResult
    assert asked == ["Approve 'migrate'?", "Approve 'deploy'?"]


@pytest.mark.parametrize("answer", [{"approved": "yes", "approver": "eve"},
                                    {"approved": True}, {"approver": "eve"}])
def test_approve_declines_an_answer_that_is_not_a_well_formed_yes(answer):
    async def handler(message, response_type, params, context):
        return answer

    async def story():
        async with demo.serving() as server:
            async with demo.Client(server, elicitation_handler=handler) as client:
                task = await demo.call_tool_task(client, "approve", {"action": "drop table"})
                return (await task).data

    assert asyncio.run(story()) == "drop table: declined"


async def a_flood_cancelled(server, monkeypatch) -> tuple[str | None, list[int]]:
    """A body asked to report a thousand times a second (1,000 steps in 1 s),
    cancelled at step 50: how it ended, and the steps it reported. Without a cap
    on reports, a cancel on memory:// waits a few hundred ms, or never lands."""
    reported, report = [], demo.report

    async def counted(ctx, progress, total, message):
        reported.append(demo.step_of(message))
        await report(ctx, progress, total, message)

    monkeypatch.setattr(demo, "report", counted)
    async with demo.Client(server) as client:
        task = await demo.call_tool_task(client, "work", {
            "label": "fast", "seconds": 1, "steps": 1000})
        await demo.follow(task, demo.now(), until=demo.past_step(50))
        await task.cancel()
        return await demo.JOURNAL.end_of(task.task_id, timeout=5), [s for s in reported if s]


def flood_held(ended: str | None, reported: list[int]) -> bool:
    # Stopped by the cancel, not finished; and it reported by the clock (at most
    # every 50 ms), not at every step: the first report is at step 1, the next
    # ones dozens of steps apart, however busy the machine.
    return ended == "cancelled" and len(reported) * 10 < max(reported) + 10


def test_cancel_stops_a_body_asked_to_report_a_thousand_times_a_second(monkeypatch):
    async def story():
        async with demo.serving() as server:
            return await a_flood_cancelled(server, monkeypatch)

    assert flood_held(*asyncio.run(asyncio.wait_for(story(), 60)))


def test_a_body_over_its_wall_clock_limit_is_stopped_and_frees_its_slot(monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(demo, "TIME_LIMIT", timedelta(seconds=0.3))  # short enough to watch

    async def hang() -> str:
        await asyncio.sleep(3600)
        return "never"

    async def story():
        async with demo.serving(concurrency=1) as server, demo.Client(server) as client:
            stuck = await demo.call_tool_task(client, "hang", {}, raise_on_error=False)
            after = await demo.call_tool_task(client, "work", {"label": "next", "seconds": 0})
            final = await demo.wait(stuck, 10)
            next_result = (await asyncio.wait_for(after.result(), 10)).data
            async with demo.Client(server, mode="legacy") as plain:
                plain_answer = await plain.call_tool("hang", {}, raise_on_error=False)
        return final, demo.JOURNAL.of(stuck.task_id), next_result, plain_answer

    demo.mcp.tool(demo.task_body(hang), name="hang", task=demo.TASK)  # for a lesson server
    try:
        final, body, next_result, plain_answer = asyncio.run(asyncio.wait_for(story(), 60))
    finally:
        demo.mcp.local_provider.remove_tool("hang")
    # The same answer on both paths: an isError result naming the limit.
    assert final.status == "completed" and final.result["isError"]
    assert "wall-clock limit" in final.result["content"][0]["text"]
    assert plain_answer.is_error and "wall-clock limit" in plain_answer.content[0].text
    assert body == ["start", "cancelled"]  # the body itself was stopped
    assert next_result["label"] == "next"  # and its one slot ran the next task


def test_a_terminal_hears_at_once_that_imports_take_seconds():
    # (Piped, it says nothing: the bad-input test finds exactly one line on stderr.)
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "--help"],
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    try:
        first = os.read(leader, 200).decode()  # the first write, whatever comes later
    except OSError:  # the process ended, having written nothing there
        first = ""
    finally:
        process.wait(timeout=60)
        os.close(leader)
    assert first.startswith("tasks_demo.py: importing fastmcp and docket")


def test_ctrl_c_on_a_terminal_shows_the_cursor_and_draws_nothing_after():
    # The live table (poll) hides the cursor while it draws. Ctrl-C mid-table:
    # the cursor is shown again, and nothing is drawn below "interrupted".
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "poll"],
                               stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    try:
        while b"tasks/get, polled" not in screen:  # the live table is on the screen
            screen += os.read(leader, 65536)
        process.send_signal(signal.SIGINT)
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process ended: nothing more can be drawn
                break
            if not chunk:
                break
            screen += chunk
    finally:
        process.wait(timeout=60)
        os.close(leader)
    assert process.returncode == 130
    last_hidden, shown = screen.rfind(b"\x1b[?25l"), screen.rfind(b"\x1b[?25h")
    assert 0 <= last_hidden < shown  # hidden by the table, shown again on the way out
    assert screen.rstrip().endswith(b"interrupted"), screen[-300:]


def test_the_live_table_fits_an_80_column_terminal_uncut():
    console = demo.Console(width=80, record=True, color_system=None)
    latest = {"A": demo.Sample(0.1, 0.12, "working (queued)", None),
              "B": demo.Sample(0.5, 0.52, "working", "B: step 2/5 (40%)"),
              "suite": demo.Sample(0.9, 0.91, "working",
                                   "14/20 run, 12 passed, failed: test_7, test_14")}
    console.print(demo.dashboard(latest))
    shown = console.export_text()
    assert max(map(len, shown.splitlines())) <= 80
    assert "…" not in shown
    for words in ("working (queued)", "B: step 2/5 (40%)", "failed: test_7, test_14", "elapsed"):
        assert words in shown, words  # each on one line: no column folded mid-word
