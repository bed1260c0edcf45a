"""The four warmup requests sent before a container takes traffic, and how each answer is judged.

Each path (plain chat with thinking on, thinking off, long context, tool call) runs different code in
SGLang: the reasoning parser, the chat template's no-thinking branch, chunked prefill over the sparse
attention kernels, the tool-call parser. Hitting each once moves its first-use cost (CUDA graph
replay, JIT kernels, grammar/parsers) out of the first customer request, and checking each answer
catches a server that is up but broken (wrong parser, template, weights) before Modal routes to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from serving.config import Timeouts
from serving.log_redaction import Redactor

# The long-context prompt is this many numbered records of 15-20 tokens each (digits may be one
# token apiece): 15-20k tokens, several chunked-prefill chunks, yet safely under the launch limits
# of 32768 prefill and 65536 total tokens.
LONG_CONTEXT_RECORDS = 1000

# Characters of a bad response body quoted in an error: enough to recognise an error payload.
BODY_EXCERPT_CHARS = 300

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

NO_THINKING = {"enable_thinking": False}


class WarmupError(Exception):
    """A warmup request failed or its answer is unusable. `path` names the warmup path."""

    def __init__(self, path: str, reason: str, *, transport: bool = False):
        super().__init__(f"warmup path '{path}': {reason}")
        self.path = path
        self.reason = reason
        # True when no HTTP answer arrived at all (connection refused/reset, timeout): the caller
        # checks whether the server process died, which is the more useful thing to report.
        self.transport = transport


def long_context_prompt(records: int = LONG_CONTEXT_RECORDS) -> str:
    """A deterministic long document with one question about it."""
    lines = [
        f"Record {i:04d}: shelf {i % 97:02d}, box {i % 13:02d}, code word {_code_word(i)}." for i in range(records)
    ]
    target = records * 2 // 3
    return "\n".join(
        ["Below is an inventory. Read it, then answer the question after it.", *lines, ""]
        + [f"Question: what is the code word of record {target:04d}? Answer with the word only."]
    )


def _code_word(i: int) -> str:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi"]
    return "".join(syllables[(i >> shift) % len(syllables)] for shift in (0, 3, 6))


def _message(body: dict[str, Any]) -> dict[str, Any]:
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("the response has no choices[0].message") from None
    if not isinstance(message, dict):
        raise ValueError("choices[0].message is not an object")
    return message


def _text(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    return value.strip() if isinstance(value, str) else ""


def _needs_text(message: dict[str, Any]) -> str | None:
    # Thinking is on by default for GLM-5.1 and 32 tokens may all go to reasoning, so either field
    # proves generation and the reasoning parser work.
    if _text(message, "content") or _text(message, "reasoning_content"):
        return None
    return "empty answer: neither content nor reasoning_content"


def _needs_content(message: dict[str, Any]) -> str | None:
    if _text(message, "content"):
        return None
    return "empty content"


def _needs_tool_call(message: dict[str, Any]) -> str | None:
    tool_calls = message.get("tool_calls")
    if not tool_calls or not isinstance(tool_calls, list):
        return "no tool_calls in the answer (tool-call parser or template broken?)"
    function = (tool_calls[0] or {}).get("function") or {}
    if function.get("name") != WEATHER_TOOL["function"]["name"]:
        return f"tool call names {function.get('name')!r}, expected 'get_weather'"
    try:
        arguments = json.loads(function.get("arguments") or "")
    except (TypeError, ValueError):
        return "tool call arguments are not JSON"
    if not isinstance(arguments, dict):
        return "tool call arguments are not a JSON object"
    return None


@dataclass(frozen=True)
class WarmupPath:
    name: str
    # The request body, given the served model name.
    payload: Callable[[str], dict[str, Any]]
    # None when the assistant message is a usable answer, else what is wrong with it.
    check: Callable[[dict[str, Any]], str | None]


WARMUP_PATHS: tuple[WarmupPath, ...] = (
    WarmupPath(
        "chat",
        lambda model: {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 32,
        },
        _needs_text,
    ),
    WarmupPath(
        "thinking-off",
        lambda model: {
            "model": model,
            "messages": [{"role": "user", "content": "Explain quicksort in one sentence."}],
            "max_tokens": 64,
            "chat_template_kwargs": NO_THINKING,
        },
        _needs_content,
    ),
    WarmupPath(
        "long-context",
        lambda model: {
            "model": model,
            "messages": [{"role": "user", "content": long_context_prompt()}],
            "max_tokens": 16,
            "chat_template_kwargs": NO_THINKING,
        },
        _needs_content,
    ),
    WarmupPath(
        "tool-call",
        lambda model: {
            "model": model,
            "messages": [{"role": "user", "content": "What's the weather in Tokyo?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
            "max_tokens": 256,
            "chat_template_kwargs": NO_THINKING,
        },
        _needs_tool_call,
    ),
)


def run_warmup_path(
    path: WarmupPath,
    session: requests.Session,
    base_url: str,
    api_key: str,
    served_model_name: str,
    *,
    timeout: float = Timeouts().warmup_request,
    check_answer: bool = True,
) -> None:
    """Send one warmup request; raise WarmupError unless it returns 200 and a usable answer.

    `check_answer=False` still requires a 200 with a well-formed message; it is for random-weights
    rehearsals, whose answers are noise. Error texts never contain the request headers.
    """
    try:
        response = session.post(
            f"{base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            json=path.payload(served_model_name),
            timeout=timeout,
        )
    except requests.RequestException as exc:
        # The exception's text can include the request; name only its type.
        raise WarmupError(path.name, f"no answer ({type(exc).__name__})", transport=True) from None
    if response.status_code != 200:
        # Redact before cutting: a key the body echoes across the cut would otherwise leave a fragment
        # that no later redaction recognises.
        excerpt = Redactor([api_key])(response.text)[:BODY_EXCERPT_CHARS]
        raise WarmupError(path.name, f"HTTP {response.status_code}: {excerpt}")
    try:
        message = _message(response.json())
    except ValueError as exc:
        raise WarmupError(path.name, f"malformed response: {exc}") from None
    problem = path.check(message) if check_answer else None
    if problem:
        raise WarmupError(path.name, problem)
