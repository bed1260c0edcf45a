"""Shared pytest fixtures and the suite's isolation. Each package keeps its fixtures in its own module;
import them here.

The suite runs on all cores (scripts/test: pytest-xdist, one worker process per core). What one test
process could share with another, running beside it in the same checkout, is kept per process here:
- temporary directories: pytest's `tmp_path` is per worker already (basetemp/popen-gw<N>); the
  harnesses' own (`tempfile.mkdtemp`) are unique names;
- ports: every server binds port 0 and says which port it got;
- the Pulumi CLI's home: each stack test's CLI world has its own PULUMI_HOME (tests/stack/cli.py);
  anything else that runs `pulumi` (the version probe) gets this process's own (`PULUMI_HOME`);
- hypothesis' directory (its example database is off, but it still keeps caches there): this
  process's own, not `.hypothesis/` in the checkout.
Processes and machine-wide state a test looks at are scoped to its own: the processes running in
its project copy, its own children, runners whose environment names its own control plane.

SIGINT: a suite started in the background of a shell without job control (`( ./scripts/test & )`,
some CI runners) inherits SIGINT ignored, and so would every process it starts; but the tests stop
their children with SIGINT as a Ctrl-C does (the provider servers, the interrupted `up`s), and would
wait out every stop. So each test process takes SIGINT back at import, before it starts anything.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import hypothesis.configuration
import pytest

from tests.modal_control_plane.fixtures import modal_control_plane

__all__ = ["modal_control_plane"]

signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def process_own_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """PULUMI_HOME and hypothesis' directory of this test process (one per xdist worker)."""
    pulumi_home = tmp_path_factory.mktemp("pulumi-home")
    hypothesis_dir = tmp_path_factory.mktemp("hypothesis")
    hypothesis.configuration.set_hypothesis_home_dir(str(hypothesis_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PULUMI_HOME", str(pulumi_home))
        yield
