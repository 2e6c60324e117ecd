"""Every claim tasks_demo.py makes, checked through what its patterns observed.

The patterns run for real at a small time scale: durations shrink, the
protocol and the ratios between times do not. Each test reads the Report a
pattern returned; none re-checks the pattern's own verdict alone.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks_demo as demo

SCALE = 0.1  # a 3 s task takes 0.3 s
HERE = Path(__file__).parent


def run(pattern, *args, **kwargs) -> demo.Report:
    # A bound, so that a pattern that hangs fails instead of stalling the suite.
    return asyncio.run(asyncio.wait_for(pattern(*args, **kwargs), timeout=60))


# -- the patterns -----------------------------------------------------------


def test_compare_ratios_measured_in_one_run():
    scale = 0.2
    r = run(demo.compare, scale)
    f = r.facts
    # No way can beat the work itself...
    assert f["sequential_s"] >= 6 * scale
    assert f["gather_s"] >= 3 * scale and f["tasks_s"] >= 3 * scale
    # ...sequential pays for all three, the concurrent ways for the longest...
    assert f["speedup_gather"] > 1.6
    assert f["speedup_tasks"] > 1.6
    # ...and tasks cost little over gather: a poll interval, not a second.
    assert f["tasks_over_gather"] < 1.3
    assert f["submit_all_s"] < f["tasks_s"] / 3
    assert r.checks["every way returned every result"]


def test_direct_await_returns_the_input():
    r = run(demo.direct_await, SCALE)
    assert r.facts["result"] == {"label": "A", "seconds": 1 * SCALE, "steps": 5, "pid": os.getpid()}
    assert r.facts["state"] == "completed"
    assert r.facts["poll_every_ms"] == 20  # our TaskConfig, advertised to the client
    assert r.facts["result_kept_for_min"] == 15  # Docket's execution TTL


def test_200_concurrent_tasks_each_returned_exactly_once():
    r = run(demo.many_at_once, SCALE, count=200)
    assert r.facts["unique_task_ids"] == 200
    assert r.checks["results match inputs, in order"]
    assert r.checks["no result lost or doubled"]
    assert r.checks["each body ran once"]


def test_poll_sees_states_and_progress_in_order():
    updates = []
    r = run(demo.poll_dashboard, SCALE, on_update=updates.append)
    for label, states in r.facts["transitions"].items():
        assert states[-1] == "completed", label
        assert "working" in states, label  # seen running, not only queued
        # No state comes back once left: working never follows completed.
        assert states.index("working") < states.index("completed")
    # Progress only moves forward. (Polling can miss a step that lasts less
    # than a poll interval, so how many steps were seen is not asserted.)
    for label, steps in r.facts["steps_seen"].items():
        assert steps and steps == sorted(steps), label
    done = r.facts["done_at_s"]
    assert done["C"] < done["B"] < done["A"]
    assert updates and set(updates[-1]) == {"A", "B", "C"}  # the dashboard was fed


def test_fire_and_forget_frees_the_client():
    r = run(demo.fire_and_forget, SCALE)
    assert r.facts["other_work_meanwhile"] == ["JOB 0", "JOB 1", "JOB 2", "JOB 3", "JOB 4"]
    assert r.facts["task_state_meanwhile"] == "working"
    assert r.facts["short_wait_timed_out"]
    assert r.facts["submit_s"] < 2 * SCALE  # back before the work could be done
    assert r.facts["result_at_s"] >= 2 * SCALE
    assert r.holds


def test_reconnect_work_ran_while_disconnected():
    r = run(demo.reconnect, SCALE)
    assert r.facts["steps_while_away"], "no step ran while no client was connected"
    before = int(re.search(r"step (\d+)/", r.facts["last_seen_before_closing"])[1])
    after = int(re.search(r"step (\d+)/", r.facts["first_seen_after_reopening"])[1])
    assert after > before  # progress had moved on when we came back
    assert r.facts["transitions_after"][-1] == "completed"
    assert r.checks["ran once"] and r.checks["result is the input"]


def test_crash_leaves_the_result_and_no_rerun():
    r = run(demo.crash, SCALE)
    assert r.facts["steps_before_crash"][0] == "start"  # died mid-task:
    assert "done" not in r.facts["steps_before_crash"]  # started, not finished
    assert r.facts["result"] == {"label": "K", "seconds": 2 * SCALE, "steps": 5, "pid": os.getpid()}
    assert r.facts["body_runs"] == 1


def test_teammates_see_progress_and_identical_results():
    r = run(demo.teammates, SCALE)
    assert any("step" in m for m in r.facts["bob_saw"])
    assert r.facts["carol_said"].endswith("is completed")
    assert r.checks["all three fetched an identical result"]
    assert r.facts["result"]["label"] == "tests"


def test_cancel_stops_the_body():
    r = run(demo.cancel, SCALE)
    assert r.facts["body_events"][-1] == "cancelled"
    assert "done" not in r.facts["body_events"]
    assert r.facts["steps_done"] < 10 and r.facts["steps_after_cancel"] == 0
    assert "cancelled" in r.facts["result_raised"]


def test_failure_both_kinds():
    r = run(demo.failure, SCALE)
    tool_error, bug, protocol = (r.facts[k] for k in ("bad_input", "bug", "backend_down"))
    assert tool_error == {"state": "completed", "is_error_result": True,
                          "message": "the input was rejected by the tool", "error_code": None}
    assert bug["state"] == "completed" and bug["is_error_result"]
    assert "division by zero" in bug["message"]
    assert protocol == {"state": "failed", "is_error_result": False,
                        "message": "the storage backend is unreachable", "error_code": -32603}


def test_input_round_trip():
    r = run(demo.ask_for_input, SCALE)
    assert "input_required" in r.facts["transitions"]
    assert r.facts["transitions"][-1] == "completed"
    assert r.facts["question"] == ["Approve 'deploy v2'?"]
    assert r.facts["result"] == "deploy v2: approved by dana"
    assert r.checks["body ran twice, once per leg"]


def test_limits_queue_and_rate_limit():
    scale = 0.4
    r = run(demo.limits, scale)
    assert r.facts["accepted"] == ["alice-0", "alice-1", "alice-2",
                                   "bob-0", "bob-1", "bob-2", "bob-3"]
    assert [x.split(":")[0] for x in r.facts["rejected"]] == ["bob-4", "bob-5"]
    assert r.facts["most_at_once"] == 2
    assert r.facts["seen_queued"] >= 5
    # The queue shows in the times, as ratios to one task's duration: tasks
    # start in waves of two, and 7 tasks take about 4 durations, far from 1
    # (no limit) and from 7 (one at a time).
    one = 0.5 * scale
    started = r.facts["started_at_s"]
    assert started[1] - started[0] < 0.5 * one  # first wave together
    assert started[2] - started[0] > 0.8 * one  # the third waited for a slot
    assert started[6] - started[0] > 2.8 * one  # the seventh, for three waves
    assert 4 <= r.facts["drained_s"] / one < 5.5


def test_research_one_task_and_composed():
    r = run(demo.research, SCALE)
    assert r.facts["phases"][:3] == ["planning 3 searches",
                                    "searching 3 sources in parallel", "analysing findings"]
    assert r.checks["laptop and phone got the same report"]
    assert r.checks["searches ran in parallel"]
    # Composed from the client or run as one task: about the same time.
    assert 0.7 < r.facts["composed_s"] / r.facts["one_task_s"] < 1.5


def test_instant_tool_is_never_a_task():
    r = run(demo.instant, SCALE)
    assert r.facts["answer"] == "HELLO"
    assert r.facts["call_tool_task_said"] == "Tool 'instant' did not run as a task"


def test_attach_to_an_unknown_id_is_not_found():
    async def attach_unknown():
        async with demo.serving() as (server, _), demo.Client(server) as client:
            await demo.attach(client, "no-such-task", "work")

    with pytest.raises(demo.MCPError, match="not found"):
        asyncio.run(attach_unknown())


async def seen_from_second_server(first, second) -> str:
    """Submit on one server, look the task up on the other."""
    async with first._lifespan_manager(), second._lifespan_manager():
        async with demo.Client(first) as a, demo.Client(second) as b:
            task = await demo.call_tool_task(a, "work", {"label": "mine", "seconds": 0.01})
            await task
            try:
                return (await (await demo.attach(b, task.task_id, "work")).status()).status
            except demo.MCPError as error:
                return str(error)


def test_servers_on_one_memory_queue_share_tasks_so_demos_use_fresh_queues():
    same = [demo.build_server(backend="memory://", queue="shared") for _ in range(2)]
    assert asyncio.run(seen_from_second_server(*same)) == "completed"
    fresh = [demo.build_server(backend="memory://", queue=f"q{i}") for i in range(2)]
    assert asyncio.run(seen_from_second_server(*fresh)).endswith("not found")


# -- the script as a learner runs it ---------------------------------------


def script(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "tasks_demo.py"), *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_all_runs_every_pattern_and_prints_the_summary():
    result = script("--scale", str(SCALE), "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Summary" in result.stdout
    for name in demo.LEARNING_ORDER:
        assert re.search(rf"│ {re.escape(name)}\s+│ ✓", result.stdout), name
    assert "\x1b[" not in result.stdout  # piped: plain text, no control codes
    assert "Traceback" not in result.stderr


def test_help_lists_every_pattern():
    result = script("--help")
    assert result.returncode == 0
    for name in demo.PATTERNS:
        assert name in result.stdout


@pytest.mark.parametrize("args", [
    ["no-such-demo"], [],
    ["--scale", "0", "all"], ["--scale", "-1", "all"], ["--scale", "abc", "all"],
    ["--scale", "inf", "all"], ["--scale", "nan", "all"], ["poll", "--scale", "nan"],
])
def test_bad_input_is_one_line_and_exit_2(args):
    result = script(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_mid_demo_exits_130_at_once():
    # `research` at full scale keeps a 2 s task running; a graceful worker
    # shutdown would wait for it. Interrupt as soon as the demo has started.
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "research"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert "research" in process.stdout.readline()  # the demo is under way
    time.sleep(0.3)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.perf_counter() - sent < 1.0
    assert "Traceback" not in stderr and "interrupted" in stderr


def test_script_header_names_the_project_dependencies():
    tomllib = pytest.importorskip("tomllib")
    source = (HERE / "tasks_demo.py").read_text()
    block = re.search(r"^# /// script\n(.*?)^# ///$", source, re.S | re.M)[1]
    header = tomllib.loads("".join(line[2:] + "\n" for line in block.splitlines()))
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    assert header["dependencies"] == project["dependencies"]
    assert header["requires-python"] == project["requires-python"]


# -- beyond one process: real processes on loopback -------------------------

# CI installs redis-server and must not skip these; elsewhere they skip.
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (apt-get install redis-server)")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_tenants_a_task_is_found_by_its_owner_only():
    r = run(demo.tenants, 0.2)
    # Alice submitted in one process and fetched from another.
    assert r.facts["alice_sees"].startswith("found: ")
    assert json.loads(r.facts["alice_sees"][7:])["label"] == "alice-report"
    assert "not found" in r.facts["bob_sees"]
    assert "HTTP 401" in r.facts["no token_sees"]
    assert r.facts["id_entropy_bits"] == 256


@needs_redis
def test_restart_a_sigkilled_servers_task_completes_once():
    r = run(demo.restart, 0.5)
    assert r.facts["after_restart"][-1] == "completed"
    result = r.facts["result"]
    assert (result["label"], result["seconds"], result["steps"]) == ("R", 3.0, 12)
    assert r.checks["finished by the new server"]
    assert r.checks["same result when fetched again"]
    # The work can only restart once the dead worker's claim has lapsed: one
    # redelivery timeout after its last renewal, which came at most a quarter
    # of a timeout before the kill.
    timeout = demo.REDELIVERY_TIMEOUT.total_seconds()
    assert 0.75 * timeout <= r.facts["work_restarted_after_s"] < timeout + 10


@needs_redis
def test_distributed_one_task_many_processes():
    r = run(demo.distributed, 0.5)
    assert r.facts["result"]["label"] == "build"
    assert r.facts["result 1 said"] == r.facts["result 2 said"]
    assert r.checks["a worker ran it, not the server"]
    assert r.checks["the watcher saw progress, then the end"]
    assert r.facts["cancel said"] == "cancelled"
    assert not demo.CHILDREN  # every process it started is gone


@pytest.mark.parametrize("args, says", [
    (["task", "status", "--url", "http://127.0.0.1:9/mcp", "some-id"], "cannot reach"),
    (["task", "submit", "--url", "http://127.0.0.1:9/mcp"], "cannot reach"),
    (["serve", "--backend", "redis://127.0.0.1:9/0"], "cannot reach Redis"),
    (["worker", "--backend", "redis://127.0.0.1:9/0"], "cannot reach Redis"),
])
def test_unreachable_things_are_one_line_errors(args, says):
    assert says in one_line_error(script(*args))


def test_ctrl_c_during_a_story_leaves_nothing_running():
    process = subprocess.Popen([sys.executable, str(HERE / "tasks_demo.py"), "tenants"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.perf_counter() + 30
    # Until the server is up and a client process started after it.
    while len(children.read_text().split()) < 2:
        assert time.perf_counter() < deadline and process.poll() is None
        time.sleep(0.05)
    started = [int(pid) for pid in children.read_text().split()]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 130
    # Killed: gone, or a zombie left for init to reap. SIGKILL lands at once,
    # but the kernel may take a moment to show it.
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.perf_counter() + 5
    while any(running(pid) for pid in started) and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in started if running(pid)]


def test_a_story_without_redis_names_the_package(tmp_path):
    # A PATH with no redis-server on it (the script runs by absolute path).
    result = script("distributed", env={**os.environ, "PATH": str(tmp_path)})
    assert "install the redis-server package" in one_line_error(result)
    assert result.returncode == 1


@pytest.mark.parametrize("args, says", [
    (["worker", "--backend", "memory://"], "needs a shared backend"),
    (["serve", "--no-worker"], "needs a shared backend"),
    (["serve", "--token", "no-equals-sign"], "NAME=TOKEN"),
    (["task", "status"], "task_id"),
])
def test_bad_distributed_arguments_exit_2_at_once(args, says):
    result = script(*args)
    assert result.returncode == 2 and says in one_line_error(result)


# -- the bench ----------------------------------------------------------------


def test_bench_json_has_every_figure_and_accounts_for_every_result():
    result = script("bench", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"machine", "result_lag", "overhead", "throughput",
                            "compare", "cold_start"}

    lag = {(row["work_s"], row["poll_interval_ms"]): row for row in figures["result_lag"]}
    assert set(lag) == {(0.1, 20), (0.1, 5000), (0.5, 20), (0.5, 5000)}
    for row in lag.values():
        assert 0 < row["median_ms"] <= row["worst_ms"]
    # The 5 s ceiling lets the client back off to 320 ms between polls by
    # 0.5 s: a finished task is seen far later than with our 20 ms.
    assert lag[(0.5, 5000)]["median_ms"] > 2 * lag[(0.5, 20)]["median_ms"]

    overhead = {row["what"]: row for row in figures["overhead"]}
    assert set(overhead) == {"plain call (no task)", "submit a task",
                             "read its status", "submit to result"}
    assert all(0 < r["median_ms"] <= r["p90_ms"] <= r["worst_ms"] for r in overhead.values())
    assert overhead["submit to result"]["median_ms"] > overhead["submit a task"]["median_ms"]

    (throughput,) = figures["throughput"]
    assert throughput["tasks"] == 20 and throughput["every_result_once"] is True
    assert throughput["tasks_per_s"] > 0 and throughput["plain_calls_per_s"] > 0

    compare = figures["compare"]
    assert compare["sequential_s"] > compare["gather_s"] and compare["scale"] == 0.1
    assert [row["what"] for row in figures["cold_start"]] == [
        "tasks_demo.py --help", "import fastmcp_tasks", "tasks_demo.py await (first result)"]
