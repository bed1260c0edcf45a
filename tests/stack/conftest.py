"""Fixtures of the stack tests: a control plane, the web stand-in and a CLI world (PULUMI_HOME, local
backend, project copy) per test, so tests stay independent; the change-impact matrix shares one
applied stack across its cases because applying a stack from scratch is what costs time.

In parallel runs (scripts/test: xdist, `--dist loadgroup`) any worker may take any test, and a
module-scoped fixture is built by each worker that gets one of its tests. Where building it is what
costs (SHARED_ACROSS_A_MODULE), the whole module goes to one worker as one xdist group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.web import WebFront

from .cli import CliWorld
from .harness import (
    FAST_PROVIDER_ENV,
    HubStandIn,
    StackConfig,
    StackHarness,
    install_serving_functions,
)

# Modules whose tests share one expensive module-scoped fixture, and what it holds. The group keeps
# them on one worker: split, each worker would apply its own stack (a full `up`, ~half a minute).
SHARED_ACROSS_A_MODULE = {"test_change_impact.py": "the applied stack every change is previewed against"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SHARED_ACROSS_A_MODULE:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@dataclass
class Rig:
    """Everything a stack run talks to."""

    cp: ControlPlane
    web: WebFront
    world: CliWorld
    hub: HubStandIn

    def harness(self, stack: str, config: StackConfig | None = None) -> StackHarness:
        return StackHarness(stack, self.world, self.cp, config)


def modal_env(cp: ControlPlane) -> dict[str, str]:
    """What the CLI's children (the provider process, its runners) need to reach the control plane.
    HOME stays the real one: the CLI keeps nothing there (PULUMI_HOME is the world's)."""
    return {key: value for key, value in cp.client_env.items() if key != "HOME"}


@contextmanager
def rig(backend_url: str | None = None, extra_env: dict[str, str] | None = None) -> Iterator[Rig]:
    """`extra_env`: more environment for the CLI and what it starts (the provider, its runners)."""
    web = WebFront().start()
    cp = ControlPlane(web_url_of=web.url_for).start()
    web.attach(cp)
    hub = HubStandIn()
    install_serving_functions(cp, hub)
    world = CliWorld(modal_env(cp), extra_env={**FAST_PROVIDER_ENV, **(extra_env or {})}, backend_url=backend_url)
    try:
        yield Rig(cp, web, world, hub)
    finally:
        world.close()
        web.stop()
        cp.stop()
    if cp.server_errors:
        pytest.fail("modal control plane crashed while handling calls:\n" + "\n".join(cp.server_errors))
