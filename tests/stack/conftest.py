"""Fixtures of the stack tests: a control plane, the web stand-in and a CLI world (PULUMI_HOME, local
backend, project copy) per test, so tests stay independent; the change-impact matrix shares one
applied stack across its cases because applying a stack from scratch is what costs time.

In parallel runs (scripts/test: xdist, `--dist loadgroup`) any worker may take any test, and a
module-scoped fixture is built by each worker that gets one of its tests. test_change_impact.py,
whose cases share one applied stack (a full `up`, about half a minute, that each worker would
otherwise repeat), marks itself one xdist group with its `pytestmark`, beside the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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
def rig(
    backend_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[Rig]:
    """`extra_env`: more environment for the CLI and what it starts (the provider, its runners);
    `clock`: the control plane's (e.g. a MovableClock, to let idle containers scale down)."""
    web = WebFront().start()
    cp = ControlPlane(web_url_of=web.url_for, clock=clock).start()
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
