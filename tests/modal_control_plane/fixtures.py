"""pytest fixtures for the local Modal control plane (re-exported by tests/conftest.py).

`modal_control_plane` starts a fresh control plane per test (well under a second), points the
modal client *in this process* at it, and undoes that afterwards:
- sets MODAL_SERVER_URL / MODAL_TOKEN_ID / MODAL_TOKEN_SECRET / MODAL_CONFIG_PATH (not HOME: see
  below) and removes MODAL_ENVIRONMENT and MODAL_PROFILE, so nothing from a developer's own Modal
  setup leaks in;
- resets modal's process-wide caches that would otherwise remember the previous test's server:
  the `Client.from_env()` singleton, the environment cache, the user config read at import.
For subprocesses (e.g. `python -m modal deploy`), pass `env=cp.subprocess_env()`.

The fixture fails the test if the control plane itself crashed while handling a call.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import pytest

from .server import ControlPlane


def _reset_modal_client_state(server_url: str | None = None) -> None:
    """Close the cached `Client.from_env()` client (if any), forget cached environments and, given
    the URL of a control plane that is going away, un-hydrate every modal object still bound to it.

    The last part matters because apps are modules imported once per process: a module-level
    `modal.Volume.from_name(...)` hydrated against one test's control plane would otherwise keep
    that plane's object id into the next test (lookups by name are never re-resolved once hydrated).
    """
    import modal
    import modal._environments
    from modal._object import _Object
    from modal.client import _Client

    if _Client._client_from_env is not None:
        with contextlib.suppress(Exception):
            modal.Client.from_env().close()  # returns the cached client without any RPC
        _Client._set_env_client(None)
    modal._environments.ENVIRONMENT_CACHE.clear()
    if server_url is not None:
        for obj in gc.get_objects():
            # type(), not isinstance(): the latter reads `__class__`, which some proxies (torch) warn on.
            client = getattr(obj, "_client", None) if issubclass(type(obj), _Object) else None
            if client is not None and client.server_url == server_url:
                obj._unhydrate()


@contextlib.contextmanager
def connect_in_process(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """Point this process's modal client at `cp` until the block exits."""
    import modal.config

    _reset_modal_client_state()
    for key, value in cp.client_env.items():
        # HOME stays: MODAL_CONFIG_PATH already keeps modal away from ~/.modal.toml, and other tools
        # running in this process (pulumi's plugin cache, ...) still need the real home.
        if key != "HOME":
            monkeypatch.setenv(key, value)
    for key in ("MODAL_ENVIRONMENT", "MODAL_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    # modal read ~/.modal.toml at import time; make it see our empty config instead.
    monkeypatch.setattr(modal.config, "user_config_path", cp.client_env["MODAL_CONFIG_PATH"])
    monkeypatch.setattr(modal.config, "_user_config", {})
    try:
        yield cp
    finally:
        _reset_modal_client_state(cp.url)


@pytest.fixture
def modal_control_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """A started control plane; parametrize it indirectly with ControlPlane's keyword arguments (e.g.
    `{"publish_noop": NOOP_NEVER}`) to run a test under another plausible answer of Modal's."""
    cp = ControlPlane(**getattr(request, "param", {})).start()
    try:
        with connect_in_process(cp, monkeypatch):
            yield cp
    finally:
        cp.stop()
    if cp.server_errors:
        pytest.fail("modal control plane crashed while handling calls:\n" + "\n".join(cp.server_errors))
