"""The provider process ends when the Pulumi engine that started it is gone.

The engine starts a provider plugin with its own gRPC address as the only argument
(`pulumi-resource-pulumi-python <address>`, which runs `python -m pulumi.dynamic <address>`) and stops
the plugin when the operation ends. When the engine itself is killed (SIGKILL of `pulumi`, a CI
runner's time limit, an OOM kill), nothing stops the plugin: `pulumi.dynamic` serves forever, waiting
for jobs whose results nobody would receive. So, once per provider process, a daemon thread probes
the engine's address; when the engine stops accepting connections, the process exits. The job runs it
was waiting for are detached (job_runs.py): they go on on Modal, and the next `up` re-attaches to
them through their run records. A graceful interruption (one Ctrl-C) does not get here: the engine
waits for the steps in flight and records them.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

# How often the engine is probed, and how many refused probes in a row mean it is gone (a single
# refusal could be a momentary backlog overflow).
PROBE_SECONDS = 1.0
REFUSALS_MEANING_GONE = 2

_started = threading.Lock()
_watching = False


def engine_address(argv: list[str] | None = None) -> tuple[str, int] | None:
    """The engine's host and port, if this process is a provider plugin the engine started."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        return None
    host, _, port = args[0].rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def engine_refuses(address: tuple[str, int]) -> bool:
    """True only for a definite "nobody listens there"; any other trouble counts as alive."""
    try:
        with socket.create_connection(address, timeout=PROBE_SECONDS):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def watch_engine() -> None:
    """Start the watch once per process (a no-op outside a provider plugin the engine started)."""
    global _watching
    address = engine_address()
    if address is None:
        return
    with _started:
        if _watching:
            return
        _watching = True
    threading.Thread(target=_watch, args=(address,), name="engine-watch", daemon=True).start()


def _watch(address: tuple[str, int]) -> None:
    refusals = 0
    while refusals < REFUSALS_MEANING_GONE:
        time.sleep(PROBE_SECONDS)
        refusals = refusals + 1 if engine_refuses(address) else 0
    # No goodbye: the engine read our stdout and stderr, so writing there now would only raise EPIPE.
    os._exit(1)
