"""What Modal says about a deployed app: its id, deployment version, when that version was deployed,
and the URLs of its web endpoints. Used after a deploy (runner.py) and on refresh (app.py); and the
rollover that gives a deployed app fresh containers without a code change (app.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from typing import Any

import modal
import modal.experimental

from providers.modal_access.lookups import found_in
from providers.modal_internals import web_urls


def deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    """{app_id, deployment_version, deployed_at, web_urls} of the app deployed as `name`, or None when
    none is (never deployed, or stopped). deployed_at is ISO 8601 in UTC, "" when Modal has none."""
    app = found_in(environment, lambda: modal.App.lookup(name, environment_name=environment))
    if app is None:
        return None
    lifecycle = modal.experimental.get_app_lifecycle(app.app_id)
    return {
        "app_id": app.app_id,
        "deployment_version": lifecycle.version or 0,
        "deployed_at": _iso(lifecycle.deployed_at),
        "web_urls": web_urls(app.app_id),
    }


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else ""


# A rollover only starts new containers (and, with `recreate`, stops the old ones): minutes at most.
ROLLOVER_TIMEOUT_SECONDS = 900


class RolloverError(RuntimeError):
    """`modal app rollover` failed and made no new version."""


def rollover(name: str, environment: str, strategy: str, *, timeout_seconds: float = ROLLOVER_TIMEOUT_SECONDS):
    """Fresh containers for the live version of a deployed app, through the public CLI
    `modal app rollover <name> --strategy <strategy> --env <environment>` (modal/cli/app.py; RPC
    AppRollover): a new history entry with the same functions, whose containers read the app's
    secrets anew, while the old ones drain (`rolling`) or are stopped (`recreate`). The way Modal
    offers to make containers pick up what their definitions do not show, e.g. a rotated secret.

    Returns what `deployment_info` says afterwards, with `warning`: the CLI's complaint when the
    rollover happened but an old container did not stop in time. Raises RolloverError (quoting the
    CLI's last lines) when no new version was made."""
    before = deployment_info(name, environment)
    command = [sys.executable, "-m", "modal", "app", "rollover", name, "--strategy", strategy, "--env", environment]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds, check=False)
        failure = "" if done.returncode == 0 else _tail(done.stdout + done.stderr)
    except subprocess.TimeoutExpired:
        failure = f"no answer in {timeout_seconds:.0f}s"
    after = deployment_info(name, environment)
    advanced = after is not None and (before is None or after["deployment_version"] != before["deployment_version"])
    if not advanced:
        raise RolloverError(f"`modal app rollover {name}` made no new version: {failure or 'no error given'}")
    return {**after, "warning": failure}


def _tail(output: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:])
