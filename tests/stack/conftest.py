"""Fixtures of the stack tests: a control plane, the dynamic provider process and the web stand-in.

A provider process starts in well under a second, so each test gets its own (and its own control
plane), which keeps tests independent; the change-impact matrix shares one applied stack across its
cases because applying a stack from scratch is what costs time (four runner processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.modal_control_plane import ControlPlane
from tests.pulumi_engine.provider_server import ProviderServer

from .harness import (
    StackConfig,
    StackHarness,
    WebStandIn,
    api_keys_in,
    install_serving_functions,
    provider_server,
    route_web_urls,
)


@dataclass
class Rig:
    """Everything a stack run talks to."""

    cp: ControlPlane
    web: WebStandIn
    server: ProviderServer

    def harness(self, stack: str, config: StackConfig | None = None) -> StackHarness:
        return StackHarness(stack, self.server, self.cp, config)


@contextmanager
def rig(config: StackConfig) -> Iterator[Rig]:
    cp = ControlPlane().start()
    web = WebStandIn(api_keys_in(cp)).start()
    route_web_urls(cp, web)
    install_serving_functions(cp)
    server = provider_server(cp, config)
    try:
        server.start()
        yield Rig(cp, web, server)
    finally:
        server.stop()
        web.stop()
        cp.stop()
    if cp.server_errors:
        pytest.fail("modal control plane crashed while handling calls:\n" + "\n".join(cp.server_errors))
