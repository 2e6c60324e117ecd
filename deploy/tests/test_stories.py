"""The kit's stories, its `task` client, research and bench: processes on loopback."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks_demo as demo
from deploy import DemoError, cli, stories
from deploy import model as research
from deploy.serving import REDELIVERY_TIMEOUT, tasks_server
from deploy.testing import alive, needs_haproxy, needs_redis, our_children
from test_tasks_demo import HERE, SCALE, in_process, one_line, run, script


def test_crash_a_sigkilled_client_process_loses_nothing():
    seen = run(stories.crash, SCALE)
    assert seen.checks["the client process died of SIGKILL"]
    assert seen.checks["it died while the body ran"]
    assert "step" in seen.facts["victim_last_said"]  # it was mid-wait, printing progress
    assert json.loads(seen.facts["survivor_said"]) | {"seconds": 0} == {
        "label": "K", "seconds": 0, "steps": 10, "pid": os.getpid()}
    assert seen.checks["the body ran exactly once"]


@needs_redis
def test_tenants_a_task_is_found_by_its_owner_only_and_no_token_sits_in_redis():
    seen = run(stories.tenants, 0.2)
    # Alice submitted in one process and fetched from another.
    assert seen.facts["alice_sees"].startswith("found: ")
    assert json.loads(seen.facts["alice_sees"][7:])["label"] == "alice-report"
    assert "not found" in seen.facts["bob_sees"]
    assert "HTTP 401" in seen.facts["no token_sees"]
    assert seen.facts["id_length_bits"] == 256
    assert seen.facts["redis_keys_holding_alices_token"] == []  # sealed with the key
    assert not our_children()


@needs_redis
def test_restart_a_sigkilled_servers_task_completes_once():
    seen = run(stories.restart, 0.5)
    assert seen.facts["after_restart"][-1] == "completed"
    result = seen.facts["result"]
    assert (result["label"], result["seconds"], result["steps"]) == ("R", 3.0, 12)
    assert seen.checks["the new server ran it again, from the top"]
    assert seen.checks["the same result when fetched again"]
    # The work can only restart once the dead worker's claim has lapsed: one
    # redelivery timeout after its last renewal, which came at most a quarter
    # of a timeout before the kill.
    timeout = REDELIVERY_TIMEOUT.total_seconds()
    assert 0.75 * timeout <= seen.facts["run_again_after_s"] < timeout + 10
    assert not our_children()


@needs_redis
def test_distributed_one_task_many_processes():
    seen = run(stories.distributed, 0.5)
    assert seen.facts["result"]["label"] == "build"
    assert seen.facts["result 1 said"] == seen.facts["result 2 said"]
    assert seen.checks["a worker ran it"]
    assert seen.checks["the watcher saw progress, then the end"]
    assert seen.facts["cancel said"] == "cancelled"
    assert not our_children()  # every process it started is gone


@needs_haproxy
def test_replicas_any_replica_answers_and_one_may_die():
    seen = run(stories.replicas, 0.5)
    assert seen.checks["both replicas answered, no stickiness"]
    assert seen.checks["after replica 1 died, replica 2 answered everything"]
    assert seen.checks["no request failed, before or after the kill"]
    assert seen.facts["result"]["label"] == "balanced"
    assert seen.checks["cancel through the balancer"]
    assert not our_children()


def test_what_a_client_saw_of_faults_that_struck_close_together():
    # Two faults 50 ms apart: the first one's window holds no request.
    struck = {"paused": (4.0, 1, 0.0), "redis": (4.05, 2, 0.0), "worker": (20.0, 3, 0.0)}
    probes = [(4.2, 0.01, False), (4.45, 0.01, False), (4.6, 0.02, True), (20.5, 0.3, True)]
    assert stories.client_view(struck, probes) == {
        "paused": "the next fault struck before a request went out",
        "redis": "requests failed for 0.3 s (2 of 3), then answered",
        "worker": "no request failed (slowest 0.30 s)"}


@needs_haproxy
def test_soak_a_killed_worker_a_paused_one_and_a_redis_restart_lose_and_change_nothing():
    seen = run(stories.soak, 0.25, tasks=30, faults=("worker", "paused", "redis"))
    account = seen.facts
    # The paused worker was caught mid-task: that task ran again elsewhere, and
    # the paused run finished late. Still: the first result stood, one effect each.
    assert any(why.startswith("worker paused") for why in account["ran_twice_and_why"].values()
               ), (account["ran_twice_and_why"], account["faults_at_s"])
    assert account["results_changed"] == []
    assert account["effects_per_task"] == {1: account["completed"]}
    assert account["lost"] == [] and account["completed"] == account["submitted"] > 0
    # Redis went away for a second: a client saw it, and nothing was lost.
    assert account["what_a_client_saw"]["redis"].startswith("requests failed for")
    # A second run only where a fault explains it (at least once, not exactly once).
    assert account["unexplained_reruns"] == []
    assert all(why.startswith(("worker killed", "worker paused", "Redis restarted"))
               for why in account["ran_twice_and_why"].values())
    assert account["unknown_ran"] <= account["unsure_submits"]
    assert "no fault" not in account["unsure_during"]  # load alone fails no request
    assert not our_children()


@pytest.mark.parametrize("args, says", [
    (["task", "status", "--url", "http://127.0.0.1:9/mcp", "some-id"], "cannot reach"),
    (["task", "submit", "--url", "http://127.0.0.1:9/mcp"], "cannot reach"),
    (["serve", "--backend", "redis://127.0.0.1:9/0"], "cannot reach Redis"),
    (["worker", "--backend", "redis://127.0.0.1:9/0"], "cannot reach Redis"),
    (["serve", "--backend", "redis://127.0.0.1:9/0", "--token", "a=b"], "--key-file"),
    (["serve", "--backend", "REDIS://127.0.0.1:9/0", "--token", "a=b"], "--key-file"),
    (["serve", "--backend", "unix:///tmp/none.sock", "--token", "a=b"], "--key-file"),
    (["serve", "--host", "nonexistent.invalid"], "cannot listen on nonexistent.invalid"),
    (["worker", "--backend", "redis://127.0.0.1:9/0?max_connections=abc"], "--backend"),
])
def test_unreachable_things_are_one_line_errors(args, says, capsys):
    code, _, err = in_process(args, capsys)
    assert code == 1 and says in one_line(err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_kill_or_hangup_during_a_story_leaves_nothing_running(sig, tmp_path):
    # SIGTERM: `kill`, `timeout`, a CI job cancelled; SIGHUP: the terminal closed.
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "tenants"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.perf_counter() + 30
    # Until the server is up and a client process started after it.
    while len(children.read_text().split()) < 2:
        assert time.perf_counter() < deadline and process.poll() is None
        time.sleep(0.05)
    started = [int(pid) for pid in children.read_text().split()]
    process.send_signal(sig)
    assert process.wait(timeout=10) == 128 + sig
    deadline = time.perf_counter() + 5  # SIGKILL lands at once; /proc may lag
    while any(alive(pid) for pid in started) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in started if alive(pid)]
    assert list(tmp_path.iterdir()) == []  # Redis's folder went with it


def test_a_story_without_redis_names_the_package(tmp_path):
    # A PATH with no redis-server on it (the script runs by absolute path).
    result = script("distributed", env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "install the redis-server package" in one_line(result.stderr)


def test_a_task_id_may_begin_with_a_dash_wherever_it_stands():
    an_id = "-hbtzDkHkwWOlq-vkH_Dlp8RfyaTp8g1Rrr6k4XSF34"
    for argv in (["task", "status", an_id], ["task", "status", an_id, "--url", "http://h/mcp"],
                 ["task", "result", "--timeout", "5", an_id, "--token", "t"]):
        assert cli.checked(*demo.parse(argv)).task_id == an_id, argv


def test_a_short_or_unreadable_key_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from fastmcp_tasks.settings import tasks_settings
    from pydantic import SecretStr

    (tmp_path / "bytes").write_bytes(b"\xff\xfe" * 20)
    code, _, err = in_process(["worker", "--backend", "redis://127.0.0.1:9/0", "--key-file",
                               str(tmp_path / "bytes")], capsys)
    assert code == 1 and "cannot read --key-file" in one_line(err)
    monkeypatch.setattr(tasks_settings, "encryption_key", SecretStr("x"))  # as from the env
    code, _, err = in_process(["worker", "--backend", "redis://127.0.0.1:9/0"], capsys)
    assert code == 1 and "holds 1 characters: use at least 32" in one_line(err)


@pytest.mark.parametrize("args, says", [
    (["worker", "--backend", "memory://"], "needs a shared backend"),
    (["serve", "--no-worker"], "needs a shared backend"),
    (["serve", "--token", "no-equals-sign"], "NAME=TOKEN"),
    (["task", "status"], "task_id"),
    (["task", "submit", "--seconds", "5000"], "must be from 0 to 3600"),
    (["task", "submit", "--seconds", "nan"], "must be from 0 to 3600"),
    (["task", "submit", "--steps", "0"], "must be from 1 to 1000"),
    (["serve", "--port", "99999"], "must be from 1 to 65535"),
    (["serve", "--backend", "http://x"], "--backend takes memory:// or redis://"),
    (["serve", "--host", ""], "--host takes an address"),
    (["serve", "--token", "a=t", "--token", "b=t"], "the same token"),
    (["task", "status", "--url", "notaurl", "an-id"], "not an http:// URL"),
    (["task", "status", "--url", "http://[::1", "an-id"], "--url"),
    (["task", "submit", "--label", "x" * 101], "takes 1 to 100 characters"),
])
def test_bad_distributed_arguments_exit_2(args, says, capsys):
    code, _, err = in_process(args, capsys)
    assert code == 2 and says in one_line(err)


# -- deep research by a real model, offline: pydantic-ai's test models -------


def with_model(model):
    """Run deep_research as a task on a server whose research model is `model`."""
    async def story(cancel_when=None, snapshot=lambda: None):
        research.RESEARCH_MODEL, t0 = model, demo.now()
        try:
            server = await tasks_server()
            research.model_in_place(server)
            async with demo.Client(server) as client:
                task = await demo.call_tool_task(client, "deep_research", {
                    "topic": "batteries", "sources": 3, "seconds": 0.1}, raise_on_error=False)
                samples = await demo.follow(task, t0, until=cancel_when or (lambda s: False))
                if cancel_when:
                    cancelled_at = demo.now()
                    await task.cancel()
                    ended = await demo.JOURNAL.end_of(task.task_id, timeout=5)
                    # What the model saw, as the body ended (not later, at shutdown):
                    return ended, demo.JOURNAL.time(task.task_id, ended) - cancelled_at, \
                        snapshot()
                return samples, await task.result(), task.task_id
        finally:
            research.RESEARCH_MODEL = None
    return story


def test_research_by_a_model_runs_the_agent_through_the_task():
    from pydantic_ai import ModelResponse, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import FunctionModel

    returned = []

    async def model(messages, info):
        if len(messages) == 1:  # plan: three searches in one turn
            await asyncio.sleep(0.3)  # a model takes a moment: long enough to be seen
            return ModelResponse(parts=[ToolCallPart("search", {"query": f"angle {i}"})
                                        for i in range(3)])
        returned.extend(p for p in messages[-1].parts if isinstance(p, ToolReturnPart))
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {
            "summary": "three angles agree", "findings": [p.content for p in returned]})])

    samples, result, task_id = asyncio.run(with_model(FunctionModel(model))())
    said = [s.message for s in samples if s.message]
    assert any(m == "asking the model (request 1)" for m in said)
    assert "searching: angle 0 | angle 1 | angle 2" in said
    assert not result.is_error
    report = result.structured_content
    assert report["summary"] == "three angles agree" and report["sources"] == 3
    assert report["model_requests"] == 2
    # The three searches (0.1 s each) ran side by side, as the agent's tool calls.
    times = sorted(p.timestamp.timestamp() for p in returned)
    assert len(times) == 3 and times[-1] - times[0] < 0.05
    assert demo.JOURNAL.of(task_id) == ["start", "done"]


def test_cancelling_a_model_research_cancels_the_request_in_flight():
    from pydantic_ai.models.function import FunctionModel

    calls, interrupted = [], []

    async def slow_model(messages, info):
        calls.append(demo.now())
        try:
            await asyncio.sleep(30)  # a long generation
        except asyncio.CancelledError:
            interrupted.append(demo.now())
            raise

    asking = lambda status: (status.status_message or "").startswith("asking the model")  # noqa: E731
    ended, after_s, (made, stopped) = asyncio.run(with_model(FunctionModel(slow_model))(
        cancel_when=asking, snapshot=lambda: (len(calls), len(interrupted))))
    assert ended == "cancelled" and after_s < 1
    assert stopped == 1  # the request in flight was cancelled with the body...
    assert made == 1  # ...and no other was made: no tokens spent after the cancel


def test_a_model_error_ends_the_task_as_an_is_error_answer():
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.function import FunctionModel

    async def overloaded(messages, info):
        raise ModelHTTPError(status_code=529, model_name="big-model", body="overloaded")

    samples, result, _ = asyncio.run(with_model(FunctionModel(overloaded))())
    assert samples[-1].state == "completed" and result.is_error
    assert "the model failed" in result.content[0].text and "529" in result.content[0].text


def test_research_with_the_offline_test_model_from_the_command_line(capsys):
    code, out, err = in_process(["--scale", "0.2", "research"], capsys)  # --model test
    assert code == 0, err
    assert "the model's searches were its tool calls" in out and "✗" not in out


def test_what_a_model_needs_is_one_line(monkeypatch):
    with pytest.raises(DemoError, match=r"uv run --with 'pydantic-ai-slim\[anthropic\]'"):
        research.check_model("anthropic:claude-sonnet-4-5")  # its SDK is not installed
    with pytest.raises(DemoError, match="Unknown model"):
        research.check_model("nonsense:model")
    import pydantic_ai.models
    from pydantic_ai.exceptions import UserError

    def no_key(model):
        raise UserError("Set the `ANTHROPIC_API_KEY` environment variable or pass it via "
                        "`AnthropicProvider(api_key=...)`")

    monkeypatch.setattr(pydantic_ai.models, "infer_model", no_key)
    with pytest.raises(DemoError, match="Set the `ANTHROPIC_API_KEY` environment variable"):
        research.check_model("anthropic:claude-sonnet-4-5")


# -- the bench ----------------------------------------------------------------


def test_bench_json_has_every_figure_and_accounts_for_every_result():
    result = script("bench", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"machine", "result_lag", "overhead", "throughput",
                            "compare", "cold_start"}

    lag = {(row["work_s"], row["poll_interval_ms"]): row for row in figures["result_lag"]}
    assert set(lag) == {(0.1, 20), (0.1, 5000), (0.5, 20), (0.5, 5000)}
    # A result cannot be seen before the work is done, nor (at a 20 ms
    # interval) more than a few intervals after it.
    assert all(row["median_ms"] >= 0 for row in lag.values())
    assert lag[(0.5, 20)]["worst_ms"] < 200
    # The 5 s ceiling lets the client back off to 320 ms between polls by
    # 0.5 s: a finished task is seen far later than with our 20 ms.
    assert lag[(0.5, 5000)]["median_ms"] > 2 * lag[(0.5, 20)]["median_ms"]

    overhead = {row["what"]: row for row in figures["overhead"]}
    assert set(overhead) == {"plain call (no task)", "submit a task",
                             "read its status", "submit to result"}
    # Zero-length work: a task still costs a poll interval at most, not seconds.
    assert overhead["submit to result"]["median_ms"] < 200

    (throughput,) = figures["throughput"]
    assert throughput["tasks"] == 20 and throughput["every_result_once"] is True

    assert figures["compare"]["scale"] == 0.1
    assert [row["what"] for row in figures["cold_start"]] == ["tasks_demo.py --help"]


def test_a_client_command_gives_up_at_its_deadline():
    import socket

    with socket.socket() as mute:  # accepts connections, never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        url = f"http://127.0.0.1:{mute.getsockname()[1]}/mcp"
        start = time.monotonic()  # (a process of its own: bounded, if the deadline is not)
        result = script("task", "status", "--url", url, "--timeout", "1", "an-id")
    assert result.returncode == 1 and time.monotonic() - start < 15
    assert "within 1 s" in one_line(result.stderr)
