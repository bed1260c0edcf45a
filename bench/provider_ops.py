# # Provider operation latency and serialized size
#
# Drives every resource kind of `providers/` through the real dynamic-provider gRPC server
# (`python -u -m pulumi.dynamic`, started and called the way the Pulumi engine does) with the real
# modal client talking to the local Modal control plane, and reports:
#
# - the median latency of each provider operation (check, diff, create, read, update, delete) as
#   the engine sees it, i.e. including the gRPC round trip;
# - the size of the serialized provider the SDK stores in state with every resource (`__provider`),
#   computed exactly as `pulumi.dynamic.Resource` does. The goal is under 16 KiB per resource.
#
# ModalJob and ModalAppDeployment run a child process per create (and per redeploy), so their
# create/update times include starting Python and importing the app module; everything on "Modal"
# is instant here, so the numbers are our overhead, not Modal's.
#
# Run from the repository root with the project's virtualenv:
#
#     .venv/bin/python bench/provider_ops.py
#
# The last line is one JSON object:
# {"serialized_bytes": {"<ResourceKind>": n, ...}, "ops_ms": {"<ResourceKind>.<op>": ms, ...}}

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ first on sys.path; the test harness lives at the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pulumi.dynamic import ResourceProvider  # noqa: E402
from pulumi.dynamic.dynamic import serialize_provider  # noqa: E402
from pulumi.runtime._serialization import _serialize  # noqa: E402

from providers.app import AppProvider, ModalAppDeployment  # noqa: E402
from providers.environment import EnvironmentProvider, ModalEnvironment  # noqa: E402
from providers.job import JobProvider, ModalJob  # noqa: E402
from providers.secret import ModalSecret, SecretProvider  # noqa: E402
from providers.volume import ModalVolume, VolumeProvider  # noqa: E402
from tests.modal_control_plane import ControlPlane  # noqa: E402
from tests.providers.grpc_harness import desired, serve, urn_of  # noqa: E402
from tests.pulumi_engine.provider_server import ProviderServer  # noqa: E402

# Each kind goes through its whole lifecycle this many times; the table shows medians. Three keeps
# the run well under a minute (a job or deploy costs ~1-2 s of child process each time).
ROUNDS = 3

OPS = ("check", "diff", "create", "read", "update", "delete")
ENVIRONMENT = "main"
# The small Modal app module of the provider tests: importable once its folder is on PYTHONPATH.
SAMPLE_DIR = str(REPO_ROOT / "tests" / "providers")
SAMPLE_VOLUME = "bench-artifacts"
SAMPLE_MARKER = "done.json"


def serialized_size(provider: ResourceProvider) -> int:
    """len(__provider) as pulumi.dynamic.Resource computes it: dill, base64, secrets allowed."""
    serialized, _contains_secrets = _serialize(True, serialize_provider, provider)
    return len(serialized)


def sample_env(**config: Any) -> dict[str, str]:
    return {"PYTHONPATH": SAMPLE_DIR, "SAMPLE_APP_CONFIG": json.dumps({"volume": SAMPLE_VOLUME, **config})}


@dataclass
class Kind:
    """One resource kind: how to make its inputs for round i, and an in-place change of them."""

    name: str
    resource_cls: type
    provider: ResourceProvider
    inputs: Callable[[int], dict[str, Any]]
    change: Callable[[int], dict[str, Any]]
    secret_inputs: tuple[str, ...] = ()
    timings: dict[str, list[float]] = field(default_factory=dict)


KINDS = [
    Kind(
        "ModalEnvironment", ModalEnvironment, EnvironmentProvider(),
        inputs=lambda i: {"name": f"bench-env-{i}"},
        change=lambda i: {"force_delete": True},
    ),
    Kind(
        "ModalSecret", ModalSecret, SecretProvider(),
        inputs=lambda i: {"name": f"bench-secret-{i}", "environment": ENVIRONMENT, "values": {"TOKEN": f"v{i}"}},
        change=lambda i: {"values": {"TOKEN": f"v{i}-rotated"}},
        secret_inputs=("values",),
    ),
    Kind(
        "ModalVolume", ModalVolume, VolumeProvider(),
        inputs=lambda i: {"name": f"bench-volume-{i}", "environment": ENVIRONMENT},
        change=lambda i: {"delete_data": True},
    ),
    Kind(
        "ModalJob", ModalJob, JobProvider(),
        inputs=lambda i: {
            "module": "sample_modal_app", "function": "write_artifact", "environment": ENVIRONMENT,
            "module_env": sample_env(), "triggers": {"round": i},
            "artifact": {"volume": SAMPLE_VOLUME, "path": SAMPLE_MARKER}, "timeout_seconds": 120,
        },
        change=lambda i: {"module_env": sample_env(note="in-place: applies to the next run")},
    ),
    Kind(
        "ModalAppDeployment", ModalAppDeployment, AppProvider(),
        inputs=lambda i: {
            "module": "sample_modal_app", "app_name": f"bench-app-{i}", "environment": ENVIRONMENT,
            "module_env": sample_env(), "source_digest": "sha256:one",
        },
        change=lambda i: {"source_digest": "sha256:two"},  # a redeploy of the same app
    ),
]  # fmt: skip


def timed(kind: Kind, op: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = call()
    kind.timings.setdefault(op, []).append((time.perf_counter() - started) * 1000)
    return result


def lifecycle(server: ProviderServer, kind: Kind, round_: int) -> None:
    name = f"bench-{round_}"
    urn = urn_of(kind.resource_cls, name)

    def wire_inputs(values: dict[str, Any]) -> dict[str, Any]:
        """The inputs as the program registers them: secrets marked, `__provider` added."""
        return desired(kind.resource_cls, kind.provider, name, values, secret_inputs=kind.secret_inputs).inputs

    olds = wire_inputs(kind.inputs(round_))
    checked = timed(kind, "check", lambda: server.check(urn, olds))
    assert not checked.failures, checked.failures
    created = timed(kind, "create", lambda: server.create(urn, checked.inputs))
    timed(kind, "read", lambda: server.read(created.id, urn, created.properties, checked.inputs))
    news = server.check(urn, wire_inputs({**kind.inputs(round_), **kind.change(round_)}), checked.inputs).inputs
    diff = timed(kind, "diff", lambda: server.diff(created.id, urn, created.properties, news, checked.inputs))
    assert diff.changes == "some" and not diff.replaces, diff
    outputs = timed(kind, "update", lambda: server.update(created.id, urn, created.properties, news, checked.inputs))
    timed(kind, "delete", lambda: server.delete(created.id, urn, outputs, news))


def main() -> None:
    started = time.perf_counter()
    sizes = {kind.name: serialized_size(kind.provider) for kind in KINDS}
    with ControlPlane() as cp:
        cp.script_function("write_artifact", result={"ok": True}, writes={(SAMPLE_VOLUME, SAMPLE_MARKER): b"{}"})
        with serve(cp) as server:
            for kind in KINDS:
                for round_ in range(ROUNDS):
                    lifecycle(server, kind, round_)
        if cp.server_errors:
            raise SystemExit("the control plane failed:\n" + "\n".join(cp.server_errors))

    ops_ms = {
        f"{kind.name}.{op}": round(statistics.median(kind.timings[op]), 1) for kind in KINDS for op in OPS
    }
    width = max(len(kind.name) for kind in KINDS)
    print(f"Provider operations through the real gRPC server, median of {ROUNDS} rounds (ms):")
    print(f"{'resource':<{width}}  " + "".join(f"{op:>9}" for op in OPS) + f"{'__provider bytes':>18}")
    for kind in KINDS:
        cells = "".join(f"{ops_ms[f'{kind.name}.{op}']:>9.1f}" for op in OPS)
        print(f"{kind.name:<{width}}  {cells}{sizes[kind.name]:>18}")
    elapsed = time.perf_counter() - started
    print(f"largest serialized provider: {max(sizes.values())} bytes (goal: < {16 * 1024}); run took {elapsed:.1f}s")
    print(json.dumps({"serialized_bytes": sizes, "ops_ms": ops_ms}))


if __name__ == "__main__":
    main()
