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
Tests that must share a worker say so with an xdist_group marker; `--dist loadgroup` honours it
only if xdist could tag their ids with the group, which the collection here checks (a pytest
upgrade once made xdist's tagging a silent no-op).
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


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker under `--dist loadgroup`: every test with an xdist_group marker carries
    its group in its id (`<id>@<group>`), which is all the scheduler groups by."""
    if not hasattr(session.config, "workerinput") or not session.config.getvalue("loadgroup"):
        return
    untagged = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid
    ]
    if untagged:
        raise pytest.UsageError(
            f"pytest-xdist did not tag {len(untagged)} grouped tests with their xdist_group (e.g."
            f" {untagged[0]}), so `--dist loadgroup` would split them over workers: pin a pytest"
            " that pytest-xdist supports (pyproject.toml)"
        )


@pytest.fixture(scope="session", autouse=True)
def process_own_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """PULUMI_HOME and hypothesis' directory of this test process (one per xdist worker)."""
    pulumi_home = tmp_path_factory.mktemp("pulumi-home")
    hypothesis_dir = tmp_path_factory.mktemp("hypothesis")
    hypothesis.configuration.set_hypothesis_home_dir(str(hypothesis_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PULUMI_HOME", str(pulumi_home))
        yield
