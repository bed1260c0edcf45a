"""SGLangServer against a real stand-in server process (tests/serving/standin_sglang.py).

Every test launches the stand-in with an SGLang-like argv through the real lifecycle: subprocess,
process group, --config secret file, log forwarding, /health polling, warmup, crash monitor and
shutdown all run for real. Only the exit function (os._exit) is swapped for a recorder, and one
test checks the real one in a separate process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from serving.lifecycle import (
    ServerExitedError,
    SGLangServer,
    StartupTimeoutError,
    WarmupFailedError,
)
from serving.log_redaction import MIN_HIDDEN_PIECE, REDACTED
from serving.warmup import WARMUP_PATHS
from tests.serving.standin_sglang import WRAP_INDENT, key_spellings, wrapped_lines
from tests.waiting import WAIT_SECONDS, wait_until

HERE = Path(__file__).parent
STANDIN = HERE / "standin_sglang.py"
PROBE = HERE / "exit_code_probe.py"
REPO_ROOT = HERE.parent.parent

SERVED_MODEL_NAME = "glm-5.1"
# Quote and backslash: the key must survive YAML, argparse and every escaped spelling in the logs.
# Slash, plus and equals (as in `openssl rand -base64 32`): URL quoting and JSON may keep or escape them.
API_KEY = "sk-test-4f9c2a'7e\"1b\\d0/+Qw="
HF_TOKEN = "hf_standinTOKENvalue123"

# Upper bound for things that must happen "at once" (a crash noticed, a shutdown finishing). Far
# below the 10 s poll of the recipe, far above what a loaded CI machine needs.
PROMPTLY = 5.0

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def standin_argv(port: int) -> list[str]:
    """An SGLang-like launch command (as serving/commands.py renders it) that runs the stand-in."""
    return [
        sys.executable, str(STANDIN),
        "--model-path", "/model-cache/GLM-5.1-FP8",
        "--served-model-name", SERVED_MODEL_NAME,
        "--tp-size", "8",
        "--reasoning-parser", "glm45",
        "--tool-call-parser", "glm47",
        "--enable-metrics",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


class LogCapture:
    """A log sink that records lines (thread-safe: the forwarder and watcher threads write too).

    SGLang's own lines reach it through the lifecycle's forwarder thread, which may still be reading
    the pipe when the call that made SGLang print them has returned: a test waits for the line it
    asserts on (`wait_for`) instead of reading `text` at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, arrived: Callable[[str], object], what: str) -> str:
        """The log's text once `arrived(text)` holds (SGLang's line `what` has been forwarded)."""
        wait_until(lambda: arrived(self.text), f"the log has {what}")
        return self.text

    def wait_for_line(self, fragment: str) -> str:
        return self.wait_for(lambda text: fragment in text, repr(fragment))


class ExitRecorder:
    """Replaces os._exit: records the code and wakes the test."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


class FakeClock:
    """Monotonic seconds that advance by `step` on every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def launch():
    """Builds SGLangServer objects around the stand-in; stops every one at teardown."""
    created: list[SGLangServer] = []

    def build(standin_env: dict[str, str] | None = None, **kwargs) -> tuple[SGLangServer, LogCapture]:
        logs = LogCapture()
        port = free_port()
        options = {
            "port": port,
            "api_key": API_KEY,
            "served_model_name": SERVED_MODEL_NAME,
            # The caller asks for online Hub access: launch must override it.
            "env": {**os.environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": HF_TOKEN, **(standin_env or {})},
            "secret_values": [HF_TOKEN],
            "health_poll_interval": 0.05,
            "startup_timeout": 30,
            "warmup_request_timeout": 10,
            "shutdown_grace": 5,
            "exit_process": ExitRecorder(),
            "log": logs,
            **kwargs,
        }
        server = SGLangServer(standin_argv(port), **options)
        created.append(server)
        return server, logs

    yield build
    for server in created:
        server.stop(grace=0)


def assert_no_secret(text: str) -> None:
    assert API_KEY not in text
    assert HF_TOKEN not in text
    # The key's distinctive core must not leak in any escaped spelling either.
    assert "sk-test-4f9c2a" not in text
    # Nor a piece long enough to matter of the secrets or of the spellings the stand-in prints the key
    # in, on one line or read across lines (a wrap).
    unwrapped = re.sub(r"\n[ \t]*", "", text)
    for spelling in (API_KEY, HF_TOKEN, *key_spellings(API_KEY).values()):
        pieces = {spelling[i : i + MIN_HIDDEN_PIECE] for i in range(len(spelling) - MIN_HIDDEN_PIECE + 1)}
        assert not [piece for piece in pieces if piece in text or piece in unwrapped]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def requests_by_kind(log_text: str) -> list[tuple[str, str, str]]:
    return re.findall(r"request kind=(\S+) model=(\S+) auth=(\S+)", log_text)


def exit_watchers_finished() -> None:
    """Waits until the lifecycle's exit-watcher threads (one per launched SGLang) have all ended."""
    for thread in threading.enumerate():
        if thread.name == "sglang-exit-watcher":
            thread.join(WAIT_SECONDS)
            assert not thread.is_alive(), "an exit watcher never ended"


# -- happy path -------------------------------------------------------------------------------------


def test_happy_path_becomes_ready_after_health_and_four_warmups(launch):
    server, logs = launch()
    server.start()

    assert server.is_ready
    # The four warmup paths, in order, with the served model name and the Bearer key: the stand-in
    # logged each request before answering it, so all four lines are on their way.
    expected = [(path.name, SERVED_MODEL_NAME, "ok") for path in WARMUP_PATHS]
    text = logs.wait_for(lambda text: len(requests_by_kind(text)) >= len(expected), "the four warmup requests")
    assert requests_by_kind(text) == expected
    assert [path.name for path in WARMUP_PATHS] == ["chat", "thinking-off", "long-context", "tool-call"]
    # The stand-in enforces the key it read from --config: the server really is authenticated.
    models = requests.get(f"{server.base_url}/v1/models", timeout=5)
    assert models.status_code == 401
    headers = {"Authorization": f"Bearer {API_KEY}"}
    models = requests.get(f"{server.base_url}/v1/models", headers=headers, timeout=5)
    assert models.json()["data"][0]["id"] == SERVED_MODEL_NAME

    assert server.stop() == 0  # the stand-in exits cleanly on SIGTERM
    assert not server.is_ready
    logs.wait_for_line("SIGTERM: shutting down")


def test_api_key_is_never_in_argv_and_config_file_is_removed(launch):
    server, _ = launch()
    server.start()

    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert API_KEY.encode() not in b"\0".join(cmdline)
    config_path = Path(cmdline[cmdline.index(b"--config") + 1].decode())
    assert config_path.suffix == ".yaml"
    # Deleted once SGLang was healthy: it had already read it.
    assert not config_path.exists()


def test_launch_forces_offline_hub_and_unbuffered_output(launch):
    server, _ = launch()
    server.start()

    environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    assert b"HF_HUB_OFFLINE=1" in environ  # the caller's HF_HUB_OFFLINE=0 was overridden
    assert b"HF_HUB_OFFLINE=0" not in environ
    assert b"PYTHONUNBUFFERED=1" in environ


def test_process_runs_in_its_own_process_group(launch):
    server, _ = launch()
    server.start()

    assert os.getpgid(server.pid) == server.pid
    assert os.getpgid(server.pid) != os.getpgid(0)


def test_forwarded_log_never_contains_a_secret(launch):
    server, logs = launch()
    server.start()
    server.stop()

    # The stand-in printed its server_args (stdout and stderr) with the key in several spellings,
    # and its shutdown line last: once that is here, all arrived, redacted.
    text = logs.wait_for_line("SIGTERM: shutting down")
    assert "server_args=ServerArgs(" in text
    assert "server_args={" in text
    assert "Authorization=Bearer" in text
    # The key URL-quoted with `/` kept, in JSON with `\/`, and wrapped over three lines or more.
    assert "GET /v1/models?api_key=" in text
    assert "request body (PHP-style JSON): " in text
    assert text.count(REDACTED) >= 7
    assert_no_secret(text)

    # The wrap: the lines wholly inside the key are forwarded as REDACTED alone; the key's first
    # and last pieces, at the edges of their lines, are hidden too.
    wrapped = wrapped_lines(API_KEY)
    inside = [line for line in wrapped if line.strip() and line.strip() in API_KEY]
    assert len(inside) >= 2 and len(wrapped) >= 4
    start = logs.lines.index(next(line for line in logs.lines if line.endswith(wrapped[0])))
    forwarded = logs.lines[start : start + len(wrapped)]
    assert [line == WRAP_INDENT + REDACTED for line in forwarded] == [line in inside for line in wrapped]
    assert forwarded[-1] == WRAP_INDENT + "end"


# -- startup: slow, never healthy, crashing ----------------------------------------------------------


def test_slow_start_within_timeout_becomes_ready(launch):
    server, logs = launch({"STANDIN_START_DELAY": "0.6"})
    server.start()

    assert server.is_ready
    # One pipe, read in order: once the first 200 is forwarded, the 503s before it are too.
    text = logs.wait_for_line("health 200")
    assert "health 503" in text  # it really waited through the loading phase


def test_never_healthy_fails_with_timeout_at_the_deadline(launch):
    # The clock advances 10 s per reading, so the 900 s production timeout passes in ~90 polls.
    clock = FakeClock(step=10)
    server, logs = launch({"STANDIN_NEVER_HEALTHY": "1"}, startup_timeout=900, clock=clock,
                          health_poll_interval=0.01)  # fmt: skip

    with pytest.raises(StartupTimeoutError) as raised:
        server.start()

    message = str(raised.value)
    assert "did not become healthy within 900s" in message
    assert "health 503" in message  # the log tail is attached
    assert 900 <= clock.now <= 930  # gave up at the deadline, not before and not long after
    assert_no_secret(message)
    assert server.returncode is not None  # the failed server was stopped


def test_real_clock_startup_timeout_is_honoured(launch):
    server, _ = launch({"STANDIN_NEVER_HEALTHY": "1"}, startup_timeout=0.5)
    started = time.monotonic()

    with pytest.raises(StartupTimeoutError):
        server.start()

    assert 0.5 <= time.monotonic() - started < 0.5 + PROMPTLY


def test_crash_during_startup_is_noticed_at_once_not_on_the_next_poll(launch):
    # One /health poll per minute: only the exit event can explain a prompt failure.
    server, logs = launch({"STANDIN_EXIT_DURING_STARTUP": "0.3"}, health_poll_interval=60, startup_timeout=600)
    started = time.monotonic()

    with pytest.raises(ServerExitedError) as raised:
        server.start()

    assert time.monotonic() - started < PROMPTLY
    assert raised.value.returncode == 3
    message = str(raised.value)
    assert "exited with code 3 while starting" in message
    assert "CUDA out of memory" in message  # the tail of SGLang's log explains why
    assert_no_secret(message)
    assert_no_secret(logs.text)


# -- warmup ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [path.name for path in WARMUP_PATHS])
def test_bad_warmup_answer_fails_startup_naming_the_path(launch, path):
    server, _ = launch({"STANDIN_BAD_WARMUP": path})

    with pytest.raises(WarmupFailedError) as raised:
        server.start()

    assert raised.value.path == path
    assert f"warmup path '{path}'" in str(raised.value)
    assert not server.is_ready
    assert server.returncode is not None
    assert_no_secret(str(raised.value))


def test_warmup_http_error_is_reported_without_the_key(launch):
    # The error body echoes the API key, as a misbehaving server might.
    server, _ = launch({"STANDIN_BAD_WARMUP": "long-context", "STANDIN_BAD_STATUS": "500"})

    with pytest.raises(WarmupFailedError) as raised:
        server.start()

    message = str(raised.value)
    assert "warmup path 'long-context': HTTP 500" in message
    assert REDACTED in message
    assert_no_secret(message)


def test_unchecked_warmup_still_requires_http_200(launch):
    # Random-weights rehearsals skip the answer checks, not the request itself.
    server, _ = launch({"STANDIN_BAD_WARMUP": "tool-call"}, check_warmup_answers=False)
    server.start()
    assert server.is_ready

    failing, _ = launch({"STANDIN_BAD_WARMUP": "chat", "STANDIN_BAD_STATUS": "503"}, check_warmup_answers=False)
    with pytest.raises(WarmupFailedError, match="HTTP 503"):
        failing.start()


# -- after startup: crash monitor ------------------------------------------------------------------


def test_crash_after_ready_ends_the_container_promptly(launch):
    exit_recorder = ExitRecorder()
    server, logs = launch({"STANDIN_CRASH_AFTER": "0.3"}, exit_process=exit_recorder)
    server.start()
    assert server.is_ready

    assert exit_recorder.called.wait(PROMPTLY), "the crash monitor did not notice SGLang's death"
    assert exit_recorder.codes == [1]
    assert server.returncode == 7
    assert not server.is_ready
    assert "simulated crash after ready" in logs.text  # SGLang's last words were forwarded first
    assert "FATAL: SGLang exited with code 7 after startup" in logs.text


def test_crash_monitor_exits_the_real_process_with_code_1():
    port = free_port()
    command = [sys.executable, str(PROBE), API_KEY, SERVED_MODEL_NAME, str(port), "--", *standin_argv(port)]
    env = {**os.environ, "STANDIN_CRASH_AFTER": "0.3", "PYTHONPATH": str(REPO_ROOT)}

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "probe: ready" in output
    assert "FATAL: SGLang exited with code 7 after startup" in output
    assert_no_secret(output)


def test_deliberate_stop_is_not_reported_as_a_crash(launch):
    exit_recorder = ExitRecorder()
    server, logs = launch(exit_process=exit_recorder)
    server.start()

    server.stop()

    # The exit watcher decides when SGLang's exit wakes it; once it has ended, it can no longer call.
    exit_watchers_finished()
    assert not exit_recorder.called.is_set()
    assert "FATAL" not in logs.text


# -- shutdown --------------------------------------------------------------------------------------


def test_sigterm_ignored_is_killed_after_the_grace_period(launch):
    server, logs = launch({"STANDIN_IGNORE_SIGTERM": "1"}, shutdown_grace=0.5)
    server.start()

    started = time.monotonic()
    returncode = server.stop()
    elapsed = time.monotonic() - started

    assert returncode == -signal.SIGKILL
    # Waited the whole grace (less a timer-granularity allowance), then killed.
    assert 0.45 <= elapsed < 0.5 + PROMPTLY
    assert "SIGKILL" in logs.text


def test_graceful_stop_does_not_wait_out_the_grace_period(launch):
    server, _ = launch(shutdown_grace=30)
    server.start()

    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < PROMPTLY
    assert server.stop() == 0  # idempotent


def test_stop_kills_the_whole_process_group(launch):
    # The stand-in spawns a worker that ignores SIGTERM, like an SGLang scheduler stuck in CUDA.
    server, logs = launch({"STANDIN_SPAWN_CHILD": "1"})
    server.start()
    text = logs.wait_for(lambda text: re.search(r"child pid=(\d+)", text), "the worker's pid")
    child_pid = int(re.search(r"child pid=(\d+)", text).group(1))
    assert alive(child_pid)

    server.stop()

    wait_until(lambda: not alive(child_pid), "the SIGTERM-ignoring worker is gone", timeout=PROMPTLY)


def test_failed_startup_leaves_no_process_and_no_secret_file(launch, tmp_path):
    server, _ = launch({"STANDIN_BAD_WARMUP": "chat"}, config_dir=tmp_path)

    with pytest.raises(WarmupFailedError):
        server.start()

    assert not alive(server.pid)
    assert list(tmp_path.iterdir()) == []


# -- argument checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [["--api-key", API_KEY], [f"--api-key={API_KEY}"]])
def test_api_key_on_the_command_line_is_refused(flag):
    with pytest.raises(ValueError) as raised:
        SGLangServer([*standin_argv(free_port()), *flag], port=1, api_key=API_KEY, served_model_name="m")
    assert_no_secret(str(raised.value))


def test_any_secret_on_the_command_line_is_refused():
    argv = [*standin_argv(free_port()), "--note", f"token={HF_TOKEN}"]
    with pytest.raises(ValueError, match="secret value") as raised:
        SGLangServer(argv, port=1, api_key=API_KEY, served_model_name="m", secret_values=[HF_TOKEN])
    assert_no_secret(str(raised.value))


def test_start_is_single_use(launch):
    server, _ = launch()
    server.start()
    with pytest.raises(RuntimeError, match="only be called once"):
        server.start()
