"""The SGLang server process, from launch to shutdown, independent of Modal.

The Modal server class drives one `SGLangServer`:

    server = SGLangServer(argv, port=8000, api_key=os.environ["API_KEY"], served_model_name="glm-5.1",
                          env={**os.environ, **serve_env}, startup_timeout=900, shutdown_grace=30)
    server.start()   # in the web-server function: returns once SGLang is healthy and warmed up
    server.stop()    # in @modal.exit: SIGTERM the process group, wait, SIGKILL

`start()` launches SGLang in its own process group with HF_HUB_OFFLINE=1, forwards its output line
by line with every secret redacted, waits for /health, sends the four warmup requests and checks
their answers, and only then reports ready. Failures raise `ServerStartupError` with the tail of
SGLang's log, after the process has been stopped.

Two things happen as they occur instead of on a poll tick: a thread blocks in `Popen.wait()` and
sets an event when SGLang exits, so a crash during startup aborts the health wait at once, and a
crash after startup ends the container (`os._exit(1)`) so Modal replaces it instead of routing
requests to a dead port.

The API key never appears in SGLang's argv (visible to every process via `ps` and /proc): it goes in
a private YAML file passed with `--config`, which SGLang's ConfigArgumentMerger expands into
`--api-key <key>` inside its own process. The file is deleted as soon as SGLang is healthy.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import requests
import yaml

from serving.commands import secret_config_args, subprocess_env
from serving.config import Timeouts
from serving.log_redaction import LineSink, LogForwarder, Redactor, print_line
from serving.warmup import WARMUP_PATHS, WarmupError, run_warmup_path

# The deployment's timeouts (serving/config.py) are the defaults of a server built without them.
DEFAULT_TIMEOUTS = Timeouts()

# Seconds between /health polls while SGLang loads. Only affects how soon readiness is seen: a
# crash is noticed through the exit event, not on this tick.
DEFAULT_HEALTH_POLL_INTERVAL = 1.0

# Seconds one /health request may take. Loading-time /health answers are immediate (503 or refused).
HEALTH_REQUEST_TIMEOUT = 5.0

# After SIGKILL, how long to wait for the kernel to reap the process before giving up on it.
KILL_REAP_TIMEOUT = 10.0

# How long to let the log forwarder drain SGLang's last lines (its traceback) before reporting a
# crash or ending the container; children still holding the pipe open could otherwise block forever.
LOG_DRAIN_TIMEOUT = 2.0

# When a warmup request gets no HTTP answer, how long to wait for the exit event before concluding
# SGLang is alive: a dying server resets the connection slightly before its exit status is reaped.
EXIT_SETTLE_TIMEOUT = 1.0

# Lines of SGLang's log quoted in startup errors.
ERROR_TAIL_LINES = 30

# Log prefix of the lines this module writes itself, to tell them from SGLang's.
LOG_PREFIX = "[sglang-lifecycle]"


class ServerStartupError(RuntimeError):
    """SGLang did not become ready. The message ends with the (redacted) tail of its log."""


class ServerExitedError(ServerStartupError):
    """SGLang exited before it was ready."""

    def __init__(self, message: str, returncode: int | None):
        super().__init__(message)
        self.returncode = returncode


class StartupTimeoutError(ServerStartupError):
    """SGLang was still not ready when the startup timeout ran out."""


class WarmupFailedError(ServerStartupError):
    """A warmup request failed or returned an unusable answer; `path` names which one."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def write_secret_config(api_key: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write `api-key: <key>` to a new YAML file only our user can read, and return its path.

    The format is what SGLang's `--config` reads (keys are flag names without the dashes; its
    ConfigArgumentMerger turns them back into `--api-key <key>` before argparse sees them).
    """
    check_api_key(api_key)
    # mkstemp creates the file with mode 0600 and O_EXCL, so no other user can read or pre-create it.
    fd, name = tempfile.mkstemp(prefix="sglang-secret-", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        yaml.safe_dump({"api-key": api_key}, file, allow_unicode=True)
    return Path(name)


def check_api_key(api_key: str) -> None:
    """Raise ValueError (never quoting the key) for a key SGLang cannot be given."""
    if not api_key:
        raise ValueError("api_key is empty: refusing to start SGLang without authentication")
    if api_key.startswith("-") and not _looks_like_negative_number(api_key):
        # The merger passes the value as the argument after --api-key, and argparse reads a
        # leading '-' as the next flag ("argument --api-key: expected one argument").
        raise ValueError("api_key starts with '-', which SGLang's argument parser takes for a flag")


def _looks_like_negative_number(text: str) -> bool:
    # argparse's own rule (its _negative_number_matcher): "-1" and "-2.5" are values, "-1e5" and
    # "-inf" are flags.
    return re.fullmatch(r"-\d+|-\d*\.\d+", text) is not None


def _refuse_secrets_in_argv(argv: Sequence[str], secrets: Iterable[str]) -> None:
    for arg in argv:
        if arg == "--api-key" or arg.startswith("--api-key="):
            raise ValueError("argv contains --api-key: pass the key as api_key, never on the command line")
        if arg == "--config" or arg.startswith("--config="):
            # SGLang accepts one config file, and that one carries the API key.
            raise ValueError("argv already contains --config; SGLangServer passes its own")
        if any(secret and secret in arg for secret in secrets):
            raise ValueError("argv contains a secret value; secrets must not be on the command line")


class SGLangServer:
    """One SGLang server subprocess: launch, health, warmup, crash monitor, shutdown.

    argv: the launch command without the API key, e.g. ["python3", "-m", "sglang.launch_server", ...].
    port: where SGLang listens (`--port` in argv); health and warmup go to 127.0.0.1:<port>.
    api_key: required; reaches SGLang via a 0600 `--config` file and is sent as the warmup Bearer token.
    served_model_name: the `model` of the warmup requests (`--served-model-name` in argv).
    env: the subprocess environment (default: ours); HF_HUB_OFFLINE=1 is forced on top of it.
    secret_values: other values to redact from the log besides the API key (e.g. a Hub token).
    check_warmup_answers: False only for random-weights rehearsals (answers are noise; status and
        shape are still checked).
    exit_process: how the crash monitor ends the container; tests inject a recorder.
    log: where forwarded and own log lines go (default: stdout, i.e. the Modal log).
    clock: monotonic seconds for the startup deadline; tests inject a fake one.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        api_key: str,
        served_model_name: str,
        env: Mapping[str, str] | None = None,
        secret_values: Iterable[str] = (),
        startup_timeout: float = DEFAULT_TIMEOUTS.startup,
        health_poll_interval: float = DEFAULT_HEALTH_POLL_INTERVAL,
        warmup_request_timeout: float = DEFAULT_TIMEOUTS.warmup_request,
        check_warmup_answers: bool = True,
        shutdown_grace: float = DEFAULT_TIMEOUTS.shutdown_grace,
        exit_process: Callable[[int], object] = os._exit,
        log: LineSink = print_line,
        clock: Callable[[], float] = time.monotonic,
        config_dir: str | os.PathLike[str] | None = None,
    ):
        check_api_key(api_key)
        self._secrets = [api_key, *secret_values]
        _refuse_secrets_in_argv(argv, self._secrets)
        if not served_model_name:
            raise ValueError("served_model_name is empty")
        self._argv = list(argv)
        self._port = port
        self._api_key = api_key
        self._served_model_name = served_model_name
        self._env = dict(os.environ if env is None else env)
        self._startup_timeout = startup_timeout
        self._health_poll_interval = health_poll_interval
        self._warmup_request_timeout = warmup_request_timeout
        self._check_warmup_answers = check_warmup_answers
        self._shutdown_grace = shutdown_grace
        self._exit_process = exit_process
        self._clock = clock
        self._config_dir = config_dir
        self._redact = Redactor(self._secrets)
        self._sink = log

        self._process: subprocess.Popen[str] | None = None
        self._config_path: Path | None = None
        self._forwarder: LogForwarder | None = None
        self._session = requests.Session()
        # Local requests only: no proxies or netrc credentials from the environment.
        self._session.trust_env = False
        # Guards the ready/stopping/exited transitions the exit watcher and start()/stop() race on.
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self._ready = False
        self._stopping = False

    # -- public -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def is_ready(self) -> bool:
        with self._lock:
            return self._ready and not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process and self._exited.is_set() else None

    def log_tail(self, lines: int = ERROR_TAIL_LINES) -> list[str]:
        """The last lines SGLang printed, redacted."""
        return self._forwarder.tail()[-lines:] if self._forwarder else []

    def start(self) -> None:
        """Launch SGLang and return once it is healthy and every warmup answer is good.

        Raises ServerStartupError (ServerExitedError, StartupTimeoutError, WarmupFailedError) after
        stopping the process; the message carries the tail of SGLang's log, secrets redacted.
        """
        if self._process is not None:
            raise RuntimeError("SGLangServer.start() may only be called once")
        deadline = self._clock() + self._startup_timeout
        try:
            self._launch()
            self._wait_until_healthy(deadline)
            # SGLang parsed its config long before it could answer /health: the key file has done its job.
            self._delete_config()
            self._warm_up(deadline)
            with self._lock:
                if self._exited.is_set():
                    raise self._exited_error("right after warmup")
                self._ready = True
        except BaseException:
            self.stop()
            raise
        self._log(f"SGLang is ready on port {self._port} (pid {self.pid})")

    def stop(self, grace: float | None = None) -> int | None:
        """Stop SGLang: SIGTERM its process group, wait `grace` seconds (default shutdown_grace), then
        SIGKILL the group. Idempotent. Returns SGLang's exit code (negative: killed by that signal)."""
        grace = self._shutdown_grace if grace is None else grace
        with self._lock:
            self._stopping = True
        process = self._process
        if process is not None:
            if not self._exited.is_set():
                self._log(f"stopping SGLang (pid {process.pid}): SIGTERM, SIGKILL after {grace:g}s")
                self._signal_group(signal.SIGTERM)
                if not self._exited.wait(grace):
                    self._log(f"SGLang still running {grace:g}s after SIGTERM: SIGKILL")
            # Also kills what is left of the group after a clean exit of the leader: SGLang's scheduler
            # and detokenizer processes hold GPU memory and must not outlive the container's server.
            self._signal_group(signal.SIGKILL)
            self._exited.wait(KILL_REAP_TIMEOUT)
            if self._forwarder is not None:
                self._forwarder.join(LOG_DRAIN_TIMEOUT)
        self._delete_config()
        self._session.close()
        return self.returncode

    def __enter__(self) -> SGLangServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- launch -----------------------------------------------------------------------------------

    def _launch(self) -> None:
        self._config_path = write_secret_config(self._api_key, self._config_dir)
        argv = [*self._argv, *secret_config_args(self._config_path)]
        env = subprocess_env(self._env)
        self._log(f"launching SGLang: {self._redact(' '.join(argv))}")
        self._process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Text mode with universal newlines; undecodable bytes must not kill the log forwarder.
            text=True,
            encoding="utf-8",
            errors="replace",
            # A new session makes SGLang the leader of its own process group, so shutdown can signal
            # it and every worker it spawns at once, and never our own process.
            start_new_session=True,
        )
        assert self._process.stdout is not None
        self._forwarder = LogForwarder(self._process.stdout, self._redact, self._sink)
        self._forwarder.start()
        threading.Thread(target=self._watch_exit, name="sglang-exit-watcher", daemon=True).start()

    def _watch_exit(self) -> None:
        """Blocks until SGLang exits. Wakes the startup wait; after startup, ends the container."""
        assert self._process is not None
        returncode = self._process.wait()
        with self._lock:
            self._exited.set()
            crashed_while_serving = self._ready and not self._stopping
        if not crashed_while_serving:
            return
        if self._forwarder is not None:
            self._forwarder.join(LOG_DRAIN_TIMEOUT)  # SGLang's last words first
        self._log(
            f"FATAL: SGLang exited with code {returncode} after startup; ending the container so Modal replaces it"
        )
        self._signal_group(signal.SIGKILL)  # leave no orphaned workers holding the GPUs
        self._exit_process(1)

    # -- health and warmup ------------------------------------------------------------------------

    def _wait_until_healthy(self, deadline: float) -> None:
        url = f"{self.base_url}/health"
        launched = time.monotonic()
        polls = 0
        while True:
            if self._exited.is_set():
                raise self._exited_error("while starting (before /health answered 200)")
            polls += 1
            try:
                if self._session.get(url, timeout=HEALTH_REQUEST_TIMEOUT).status_code == 200:
                    self._log(f"SGLang is healthy after {time.monotonic() - launched:.1f}s ({polls} polls)")
                    return
            except requests.RequestException:
                pass  # not listening yet: weights are still loading
            if self._clock() >= deadline:
                raise StartupTimeoutError(
                    self._with_tail(
                        f"SGLang did not become healthy within {self._startup_timeout:g}s "
                        f"(startup timeout; {polls} /health polls)"
                    )
                )
            # Sleeps until the next poll, but returns at once if SGLang exits.
            self._exited.wait(self._health_poll_interval)

    def _warm_up(self, deadline: float) -> None:
        for path in WARMUP_PATHS:
            if self._exited.is_set():
                raise self._exited_error(f"before warmup path '{path.name}'")
            if self._clock() >= deadline:
                raise StartupTimeoutError(
                    self._with_tail(
                        f"startup timeout of {self._startup_timeout:g}s ran out during warmup, "
                        f"before path '{path.name}'"
                    )
                )
            sent = time.monotonic()
            try:
                run_warmup_path(
                    path,
                    self._session,
                    self.base_url,
                    self._api_key,
                    self._served_model_name,
                    timeout=self._warmup_request_timeout,
                    check_answer=self._check_warmup_answers,
                )
            except WarmupError as exc:
                if exc.transport and self._exited.wait(EXIT_SETTLE_TIMEOUT):
                    raise self._exited_error(f"during warmup path '{path.name}'") from None
                raise WarmupFailedError(self._with_tail(f"SGLang failed {exc}"), exc.path) from None
            # The first request of each path pays its one-time costs: worth seeing in the log.
            self._log(f"warmup path '{path.name}' answered well in {time.monotonic() - sent:.1f}s")

    # -- helpers ----------------------------------------------------------------------------------

    def _exited_error(self, when: str) -> ServerExitedError:
        if self._forwarder is not None:
            self._forwarder.join(LOG_DRAIN_TIMEOUT)  # so the tail includes SGLang's traceback
        returncode = self._process.returncode if self._process else None
        return ServerExitedError(self._with_tail(f"SGLang exited with code {returncode} {when}"), returncode)

    def _with_tail(self, message: str) -> str:
        tail = self.log_tail()
        text = message + ("\nlast lines of SGLang's log:\n" + "\n".join(tail) if tail else "")
        return self._redact(text)

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        try:
            # The group id is SGLang's pid (start_new_session): this never reaches our own group.
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the whole group is already gone

    def _delete_config(self) -> None:
        if self._config_path is not None:
            self._config_path.unlink(missing_ok=True)

    def _log(self, message: str) -> None:
        try:
            self._sink(self._redact(f"{LOG_PREFIX} {message}"))
        except Exception:
            pass  # logging must never break startup or shutdown
