"""The call log and the fault plan of the control plane.

Every RPC the client makes is recorded *before* it is answered (so a call that we then fail on
purpose, or that the client retries, shows up once per attempt), with:

- `rpc`: the bare RPC name, e.g. "SecretGetOrCreate";
- `mutating`: whether it can change state on Modal (see `is_mutating`), so a test can assert
  "a no-op `pulumi up` made zero mutating calls";
- `args`: the request's scalar fields worth asserting on (names, ids, environment, ...), with
  secret values replaced by their keys: the log may end up in test output;
- `ts`: when it arrived, from the control plane's clock.

The fault plan fails the next N calls of an RPC with a chosen gRPC status, or delays every call
of an RPC, so tests can exercise our retry logic (see `client_retries.py` for what the modal
client already retries by itself, which a fault must outlast to reach our code).
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from grpclib import Status

# Words in an RPC name that mean "this changes something on Modal". An RPC is mutating when any
# word after its leading noun is one of these, e.g. AppPublish, FunctionPutInputs, VolumeRemoveFile2.
MUTATING_VERBS = frozenset(
    {
        "Create", "Precreate", "Delete", "Put", "Publish", "Update", "Stop", "Remove", "Commit", "Deploy",
        "Rename", "Copy", "Map", "Set", "Disconnect", "Rollback", "Promote", "Rollover", "Bind", "Cancel",
        "Clear", "Retry", "Finish", "Append", "Pop", "Restore", "Snapshot", "Terminate",
        # WebhookTokenEnvironmentAdd (allowing a proxy token somewhere), ProxyAddIp, TokenEnable/Disable.
        "Add", "Enable", "Disable",
    }
)  # fmt: skip

# Fields that carry secret material: only their keys (or nothing) may reach the log.
SECRET_FIELDS = frozenset({"env_dict", "updates"})

# Request headers kept with each call: the client's retry bookkeeping and identity. Credentials
# (x-modal-token-secret, auth tokens) are never kept.
LOGGED_HEADERS = frozenset(
    {"x-idempotency-key", "x-retry-attempt", "x-retry-delay", "x-modal-client-version", "x-modal-client-type"}
)

# Repeated fields longer than this are logged by their length only, to keep records small.
MAX_LOGGED_ITEMS = 20


def is_mutating(rpc: str, request: Message) -> bool:
    """Whether this call can change state, judged from the RPC name and, for the *GetOrCreate
    family, from what the request asks for (a plain lookup creates nothing)."""
    if "object_creation_type" in request.DESCRIPTOR.fields_by_name:
        return request.object_creation_type != 0  # OBJECT_CREATION_TYPE_UNSPECIFIED is a lookup
    words = re.findall(r"[A-Z][a-z0-9]*", rpc)
    return any(word in MUTATING_VERBS for word in words[1:])


def summarize(rpc: str, request: Message) -> dict[str, Any]:
    """The request's arguments of interest: set scalar fields (enums by name), short repeated
    scalars, secret dicts reduced to their sorted keys, and the name of a function being created."""
    args: dict[str, Any] = {}
    for descriptor, value in request.ListFields():
        name = descriptor.name
        if name in SECRET_FIELDS:
            if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
                args[name + "_keys"] = sorted(value)
            else:
                args[name + "_keys"] = sorted(getattr(item, "key", "") for item in value)
            continue
        if descriptor.message_type is not None:
            continue  # nested messages: see the special cases below
        if descriptor.type == descriptor.TYPE_BYTES:
            args[name + "_len"] = len(value)
        elif descriptor.is_repeated:
            args[name] = list(value) if len(value) <= MAX_LOGGED_ITEMS else f"<{len(value)} items>"
        elif descriptor.enum_type is not None:
            enum_value = descriptor.enum_type.values_by_number.get(value)
            args[name] = enum_value.name if enum_value is not None else value
        else:
            args[name] = value
    # Function definitions are nested; the name is what tests want to see.
    if rpc == "FunctionCreate":
        function = request.function
        if request.function_data.ranked_functions:
            function = request.function_data.ranked_functions[0].function
        args["function_name"] = function.function_name
    if rpc == "ImageGetOrCreate":
        args["dockerfile_commands"] = len(request.image.dockerfile_commands)
    return args


@dataclass(frozen=True)
class CallRecord:
    rpc: str
    mutating: bool
    args: dict[str, Any]
    ts: float
    metadata: dict[str, str] = field(default_factory=dict)  # the LOGGED_HEADERS the call carried


class CallLog:
    """Thread-safe, append-only list of `CallRecord`s; `mark()` returns a position to slice from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    def mark(self) -> int:
        with self._lock:
            return len(self._records)

    def since(self, mark: int) -> list[CallRecord]:
        with self._lock:
            return self._records[mark:]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


@dataclass
class InjectedFailure:
    status: Status
    message: str


@dataclass
class FaultPlan:
    """Per-RPC queues of failures to raise and per-RPC latency to add, consumed by the dispatcher."""

    failures: dict[str, deque[InjectedFailure]] = field(default_factory=lambda: defaultdict(deque))
    latency: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, rpc: str, n: int, status: Status, message: str) -> None:
        with self._lock:
            for _ in range(n):
                self.failures[rpc].append(InjectedFailure(status, message))

    def add_latency(self, rpc: str, seconds: float) -> None:
        with self._lock:
            if seconds > 0:
                self.latency[rpc] = seconds
            else:
                self.latency.pop(rpc, None)

    def take(self, rpc: str) -> tuple[float, InjectedFailure | None]:
        """Latency to wait and failure to raise (if any) for one call of `rpc`."""
        with self._lock:
            queue = self.failures.get(rpc)
            failure = queue.popleft() if queue else None
            return self.latency.get(rpc, 0.0), failure

    def pending_failures(self, rpc: str) -> int:
        with self._lock:
            return len(self.failures.get(rpc, ()))

    def clear(self) -> None:
        with self._lock:
            self.failures.clear()
            self.latency.clear()
