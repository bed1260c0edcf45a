"""The lifecycle's pieces on their own: redaction, log forwarding, the secret config file (checked with
the pinned SGLang's own parser), and the warmup payloads and answer checks."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml
from sglang.srt.server_args import prepare_server_args

from serving.commands import secret_config_args
from serving.lifecycle import SGLangServer, write_secret_config
from serving.log_redaction import REDACTED, LogForwarder, Redactor
from serving.warmup import (
    BODY_EXCERPT_CHARS,
    NO_THINKING,
    WARMUP_PATHS,
    WEATHER_TOOL,
    WarmupError,
    long_context_prompt,
    run_warmup_path,
)
from tests.serving.standin_sglang import LONG_PROMPT_CHARS, good_message, request_kind

KEY = "sk-live-9Qz'x\"y\\z"
PLAIN_KEY = "sk-live-0123456789abcdef"

# -- redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        f"api_key={PLAIN_KEY}",
        f"prefix{PLAIN_KEY}suffix",  # inside a longer token
        f"server_args=ServerArgs(port=8000, api_key={KEY!r}, tp_size=8)",  # dataclass repr
        "server_args=" + repr({"api_key": KEY, "port": 8000}),  # dict repr, as 0.5.23 logs it
        json.dumps({"api_key": KEY}),
        json.dumps({"api_key": "é" + KEY}),  # \\u escapes next to the key
        repr(repr({"api_key": KEY})),  # a repr of a repr: escaped twice
        json.dumps(json.dumps({"api_key": KEY})),
        "GET /v1/models?key=" + urllib.parse.quote(KEY, safe=""),
        f"Authorization: Bearer {KEY}",
    ],
)
def test_redactor_removes_every_spelling_of_the_secret(line):
    redact = Redactor([KEY, PLAIN_KEY])
    redacted = redact(line)
    assert REDACTED in redacted
    assert "sk-live-" not in redacted


def test_redactor_keeps_other_text_and_ignores_empty_secrets():
    redact = Redactor(["", PLAIN_KEY])
    assert redact("no secrets here") == "no secrets here"
    assert redact(f"a {PLAIN_KEY} b {PLAIN_KEY}") == f"a {REDACTED} b {REDACTED}"
    assert Redactor([])("anything") == "anything"


def test_redactor_prefers_the_longest_match():
    # One secret contains another: the longer must be replaced whole, leaving no fragment of it.
    redact = Redactor(["abc123", "abc123-and-more"])
    assert redact("x abc123-and-more y") == f"x {REDACTED} y"


# -- log forwarding --------------------------------------------------------------------------------


def test_forwarder_redacts_splits_carriage_returns_and_keeps_a_tail():
    stream = io.StringIO(f"one {PLAIN_KEY}\nloading 10%\rloading 100%\nlast\n", newline=None)
    lines: list[str] = []
    forwarder = LogForwarder(stream, Redactor([PLAIN_KEY]), lines.append, tail_lines=2)
    forwarder.start()
    forwarder.join(5)

    assert lines == [f"one {REDACTED}", "loading 10%", "loading 100%", "last"]
    assert forwarder.tail() == ["loading 100%", "last"]


def test_forwarder_keeps_draining_when_the_sink_fails():
    # A subprocess blocks on a full pipe: a broken sink must not stop the reading.
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd, "r")
    calls: list[str] = []

    def broken_sink(line: str) -> None:
        calls.append(line)
        raise OSError("log sink is gone")

    forwarder = LogForwarder(stream, Redactor([]), broken_sink)
    forwarder.start()
    # Far more than a pipe buffer (64 KiB): the writer only finishes if the forwarder keeps reading.
    payload = ("x" * 99 + "\n").encode() * 2000
    writer = threading.Thread(target=lambda: (os.write(write_fd, payload), os.close(write_fd)))
    writer.start()
    writer.join(10)
    forwarder.join(10)

    assert not writer.is_alive()
    assert len(calls) == 2000


# -- the secret config file, read by the pinned SGLang parser ---------------------------------------


def test_secret_config_is_private_yaml(tmp_path):
    path = write_secret_config(KEY, tmp_path)

    assert path.parent == tmp_path
    assert path.suffix == ".yaml"  # SGLang refuses other suffixes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_config_args(path) == ["--config", str(path)]


@pytest.mark.parametrize("key", [KEY, PLAIN_KEY, "12345", "true", "null", "a key: with # yaml chars", "-1", "-2.5"])
def test_pinned_sglang_parser_reads_the_key_from_the_config_file(tmp_path, key):
    path = write_secret_config(key, tmp_path)
    argv = ["--model-path", "/model-cache/GLM-5.1-FP8", "--served-model-name", "glm-5.1", "--port", "8000"]

    server_args = prepare_server_args([*argv, *secret_config_args(path)])

    assert server_args.api_key == key  # same string, not a YAML bool/int/None
    assert server_args.served_model_name == "glm-5.1"
    assert server_args.port == 8000


@pytest.mark.parametrize("key", ["-abc", "--flag-like", "-inf", "-1e5"])
def test_keys_sglang_cannot_parse_are_refused_up_front(tmp_path, key):
    # Why: the merger hands the value to argparse as the word after --api-key, and a leading '-'
    # (unless argparse sees a plain negative number) reads as the next flag. SGLang would exit at
    # startup with only a usage message.
    raw = tmp_path / "raw.yaml"
    raw.write_text(yaml.safe_dump({"api-key": key}))
    with pytest.raises(SystemExit):
        prepare_server_args(["--model-path", "/m", "--config", str(raw)])

    with pytest.raises(ValueError, match="starts with '-'") as raised:
        write_secret_config(key, tmp_path)
    assert key not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.yaml"]


def test_empty_key_is_refused():
    with pytest.raises(ValueError, match="empty"):
        write_secret_config("")
    with pytest.raises(ValueError, match="empty"):
        SGLangServer(["sglang"], port=1, api_key="", served_model_name="m")


# -- warmup payloads and checks --------------------------------------------------------------------

PATHS = {path.name: path for path in WARMUP_PATHS}


def test_warmup_payloads_match_the_recipe():
    chat = PATHS["chat"].payload("glm-5.1")
    assert chat["messages"] == [{"role": "user", "content": "Say hello."}]
    assert chat["model"] == "glm-5.1"
    assert "chat_template_kwargs" not in chat  # thinking on: GLM-5.1's default path

    thinking_off = PATHS["thinking-off"].payload("glm-5.1")
    assert thinking_off["chat_template_kwargs"] == {"enable_thinking": False}

    tool_call = PATHS["tool-call"].payload("glm-5.1")
    assert tool_call["tools"] == [WEATHER_TOOL]
    assert tool_call["tools"][0]["function"]["parameters"]["required"] == ["city"]

    long_context = PATHS["long-context"].payload("glm-5.1")
    assert long_context["chat_template_kwargs"] == NO_THINKING


def test_long_context_prompt_is_long_but_within_prefill_limits():
    prompt = long_context_prompt()
    assert prompt == long_context_prompt()  # deterministic
    # ~3 characters per token for this digit-heavy text: well over one 8k chunk, under 32768 tokens.
    assert 8192 * 3 < len(prompt) < 32768 * 3
    assert len(prompt) > LONG_PROMPT_CHARS  # and the stand-in sees it as the long-context request


@pytest.mark.parametrize("name", list(PATHS))
def test_standin_answers_pass_and_empty_answers_fail(name):
    payload = PATHS[name].payload("glm-5.1")
    assert request_kind(payload) == name  # the stand-in tells the four paths apart
    assert PATHS[name].check(good_message(name, payload)) is None
    assert PATHS[name].check({"role": "assistant", "content": ""}) is not None
    assert PATHS[name].check({"role": "assistant", "content": None, "tool_calls": []}) is not None


def test_chat_accepts_reasoning_only_but_thinking_off_needs_content():
    reasoning_only = {"role": "assistant", "content": None, "reasoning_content": "The user wants..."}
    assert PATHS["chat"].check(reasoning_only) is None  # 32 tokens may all go to thinking
    assert PATHS["thinking-off"].check(reasoning_only) == "empty content"
    assert PATHS["long-context"].check({"role": "assistant", "content": "  \n"}) == "empty content"


@pytest.mark.parametrize(
    ("tool_calls", "problem"),
    [
        (None, "no tool_calls"),
        ([{"function": {"name": "search", "arguments": "{}"}}], "expected 'get_weather'"),
        ([{"function": {"name": "get_weather", "arguments": "city=Tokyo"}}], "not JSON"),
        ([{"function": {"name": "get_weather", "arguments": "[1]"}}], "not a JSON object"),
    ],
)
def test_tool_call_check_names_the_problem(tool_calls, problem):
    message = {"role": "assistant", "content": "I'll check.", "tool_calls": tool_calls}
    assert problem in PATHS["tool-call"].check(message)


def test_an_error_body_cut_through_the_echoed_key_leaves_no_fragment_of_it():
    # The key starts 8 characters before the excerpt ends: cutting first and redacting afterwards
    # (as the lifecycle does with the whole message) would leave "sk-live-", which matches nothing.
    body = ("e" * (BODY_EXCERPT_CHARS - 8) + PLAIN_KEY).encode()

    class EchoingTheKey(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingTheKey)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with requests.Session() as session, pytest.raises(WarmupError) as raised:
            run_warmup_path(PATHS["chat"], session, f"http://127.0.0.1:{server.server_port}", PLAIN_KEY, "m")
    finally:
        server.shutdown()
        server.server_close()

    assert "HTTP 500" in str(raised.value)
    assert "sk-live" not in str(raised.value)
