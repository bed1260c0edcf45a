"""A stand-in for `python -m sglang.launch_server`: a real HTTP server process speaking SGLang's API.

Started with the same kind of argv as SGLang (unknown flags are accepted and ignored). It reads
`--host`, `--port`, `--served-model-name` and the API key from the `--config` YAML file, the way
SGLang's ConfigArgumentMerger does, and serves:

- GET  /health                503 while "loading", then 200; never needs the key (as in SGLang).
- GET  /v1/models             the served model; Bearer key required.
- POST /v1/chat/completions   Bearer key required; answers by request kind:
    tool-call     (`tools` given)                         -> tool_calls for the first tool
    long-context  (prompt over LONG_PROMPT_CHARS)         -> content
    thinking-off  (chat_template_kwargs.enable_thinking False) -> content only
    chat          (otherwise: thinking on, GLM's default) -> reasoning_content and content
  Each request is logged as `request kind=<kind> model=<model> auth=<ok|bad>` before it is
  answered, so a client holding the answer knows the line is already in the pipe.

Like SGLang 0.5.23 it logs its configuration with the API key in plaintext, in several spellings,
so tests can check the lifecycle's redaction: as a Python repr (stdout and stderr), in JSON, glued
to other text, URL-quoted as Python's `quote` does it (`/` kept), in JSON with `\\/` for `/` (PHP's
json_encode), and wrapped over three lines or more by a logger (`key_spellings` lists them).

Misbehaviour is chosen with environment variables:
    STANDIN_START_DELAY=<s>             /health answers 503 for this long after start
    STANDIN_NEVER_HEALTHY=1             /health answers 503 forever
    STANDIN_EXIT_DURING_STARTUP=<s>     print a traceback and exit with code 3 after this long
    STANDIN_BAD_WARMUP=<kind>           answer that kind with an empty message
    STANDIN_BAD_STATUS=<code>           ...or with this HTTP status and an error body echoing the key
    STANDIN_CRASH_AFTER=<s>             exit with code 7 this long after the warmup (4th completion)
    STANDIN_IGNORE_SIGTERM=1            ignore SIGTERM (only SIGKILL stops it)
    STANDIN_SPAWN_CHILD=1               start a worker child in the same process group that ignores
                                        SIGTERM (like SGLang's scheduler), logged as `child pid=<pid>`
Only the standard library and PyYAML (a project dependency) are used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

# A prompt longer than this is the long-context warmup (serving/warmup.py's is ~50k characters).
LONG_PROMPT_CHARS = 20_000

# Completions served before the stand-in counts itself warmed up (the lifecycle sends four).
WARMUP_COMPLETIONS = 4

EXIT_CODE_STARTUP_CRASH = 3
EXIT_CODE_CRASH_AFTER_READY = 7

# Width and indentation of the stand-in's wrapped log line: 8 characters a line, so a key of 24 or
# more spans three lines or more, the middle ones wholly inside it.
WRAP_WIDTH = 12
WRAP_INDENT = "    "


def log(message: str, stream=sys.stdout) -> None:
    stream.write(f"[standin {time.strftime('%H:%M:%S')}] {message}\n")
    stream.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="standin_sglang", allow_abbrev=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model-path", default="standin-model")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--config", default=None)
    args, _ignored_sglang_flags = parser.parse_known_args(argv)
    if args.config:
        with open(args.config, encoding="utf-8") as file:
            config = yaml.safe_load(file) or {}
        # Command line beats config file, as in SGLang.
        if args.api_key is None:
            args.api_key = config.get("api-key", config.get("api_key"))
    args.served_model_name = args.served_model_name or args.model_path
    return args


class StandIn:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.start_delay = float(os.environ.get("STANDIN_START_DELAY", "0"))
        self.never_healthy = os.environ.get("STANDIN_NEVER_HEALTHY") == "1"
        self.bad_warmup = os.environ.get("STANDIN_BAD_WARMUP", "")
        self.bad_status = int(os.environ.get("STANDIN_BAD_STATUS", "200"))
        crash_after = os.environ.get("STANDIN_CRASH_AFTER")
        self.crash_after = float(crash_after) if crash_after else None
        self.completions = 0
        self.lock = threading.Lock()

    def healthy(self) -> bool:
        return not self.never_healthy and time.monotonic() - self.started >= self.start_delay

    def count_completion(self) -> None:
        with self.lock:
            self.completions += 1
            warmed_up = self.completions == WARMUP_COMPLETIONS
        if warmed_up and self.crash_after is not None:
            start_timer(self.crash_after, crash_after_ready)

    def answer(self, body: dict) -> tuple[int, dict]:
        kind = request_kind(body)
        if kind == self.bad_warmup:
            if self.bad_status != 200:
                return self.bad_status, {"error": f"internal error; server_args api_key={self.args.api_key}"}
            return 200, completion(self.args.served_model_name, {"role": "assistant", "content": ""})
        return 200, completion(self.args.served_model_name, good_message(kind, body))


def request_kind(body: dict) -> str:
    if body.get("tools"):
        return "tool-call"
    prompt_chars = sum(len(str(message.get("content") or "")) for message in body.get("messages", []))
    if prompt_chars > LONG_PROMPT_CHARS:
        return "long-context"
    if (body.get("chat_template_kwargs") or {}).get("enable_thinking") is False:
        return "thinking-off"
    return "chat"


def good_message(kind: str, body: dict) -> dict:
    if kind == "tool-call":
        tool = body["tools"][0]["function"]["name"]
        call = {"id": "call_0", "type": "function",
                "function": {"name": tool, "arguments": json.dumps({"city": "Tokyo"})}}  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "chat":
        return {"role": "assistant", "content": "Hello!", "reasoning_content": "The user greets me."}
    return {"role": "assistant", "content": "A short answer.", "reasoning_content": None}


def completion(model: str, message: dict) -> dict:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def crash_after_ready() -> None:
    log("simulated crash after ready: exiting with code 7", sys.stderr)
    os._exit(EXIT_CODE_CRASH_AFTER_READY)


def exit_on_sigterm(signum: int, frame: object) -> None:
    log("SIGTERM: shutting down")
    sys.exit(0)


def start_timer(seconds: float, action) -> None:
    timer = threading.Timer(seconds, action)
    timer.daemon = True  # must not keep a SIGTERMed stand-in alive
    timer.start()


def crash_during_startup() -> None:
    for line in (
        "Traceback (most recent call last):",
        '  File "sglang/srt/model_executor/model_runner.py", line 1, in load_model',
        "torch.OutOfMemoryError: CUDA out of memory (simulated by the stand-in)",
    ):
        log(line, sys.stderr)
    os._exit(EXIT_CODE_STARTUP_CRASH)


def key_spellings(key: str) -> dict[str, str]:
    """The spellings of the key the stand-in prints besides its plaintext (the test looks for them)."""
    return {
        "url": urllib.parse.quote(key),  # Python's default: safe="/"
        "json-escaped-slash": json.dumps(key).replace("/", "\\/")[1:-1],
    }


def wrapped_lines(key: str) -> list[str]:
    """`wrapped api_key=<key> end` wrapped at WRAP_WIDTH, long words cut where the width ends."""
    return textwrap.wrap(
        f"wrapped api_key={key} end",
        width=WRAP_WIDTH,
        subsequent_indent=WRAP_INDENT,
        break_long_words=True,
        break_on_hyphens=False,
    )


def make_handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the stand-in logs requests itself, in one line each

        def send_json(self, status: int, payload: dict | None = None) -> None:
            data = json.dumps(payload or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {standin.args.api_key}"

        def do_GET(self) -> None:
            if self.path in ("/health", "/health_generate"):
                status = 200 if standin.healthy() else 503
                log(f"health {status}")
                self.send_json(status)
            elif self.path == "/v1/models":
                if not self.authorized():
                    self.send_json(401, {"error": "Unauthorized"})
                    return
                model = {"id": standin.args.served_model_name, "object": "model", "owned_by": "sglang"}
                self.send_json(200, {"object": "list", "data": [model]})
            else:
                self.send_json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":
                self.send_json(404, {"error": "not found"})
                return
            authorized = self.authorized()
            model = body.get("model")
            log(f"request kind={request_kind(body)} model={model} auth={'ok' if authorized else 'bad'}")
            if not authorized:
                self.send_json(401, {"error": "Unauthorized"})
            elif model != standin.args.served_model_name:
                self.send_json(404, {"error": f"The model `{model}` does not exist."})
            elif not standin.healthy():
                self.send_json(503, {"error": "server is starting"})
            else:
                status, payload = standin.answer(body)
                self.send_json(status, payload)
                if status == 200:
                    standin.count_completion()

    return Handler


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if os.environ.get("STANDIN_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, exit_on_sigterm)

    # What SGLang 0.5.23 prints at startup, key included.
    key = args.api_key
    log(f"server_args=ServerArgs(model_path='{args.model_path}', api_key='{key}', port={args.port})")
    log("server_args=" + repr({"served_model_name": args.served_model_name, "api_key": key}), sys.stderr)
    log("launch command: " + json.dumps({"argv": ["--api-key", key]}))
    log(f"auth header would be Authorization=Bearer{key}suffix")
    spellings = key_spellings(key)
    log(f"GET /v1/models?api_key={spellings['url']} 401")
    log("request body (PHP-style JSON): " + json.dumps({"api_key": key}).replace("/", "\\/"))
    # One message, several lines: only the first carries the log prefix, as a wrapping logger prints it.
    log("\n".join(wrapped_lines(key)))

    if os.environ.get("STANDIN_SPAWN_CHILD") == "1":
        child = subprocess.Popen(
            [sys.executable, "-c",
             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
        )  # fmt: skip
        log(f"child pid={child.pid}")
    exit_after = os.environ.get("STANDIN_EXIT_DURING_STARTUP")
    if exit_after:
        start_timer(float(exit_after), crash_during_startup)

    standin = StandIn(args)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(standin))
    log(f"listening on {args.host}:{args.port}, serving {args.served_model_name}")
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
