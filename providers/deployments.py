"""What Modal says about a deployed app: its id, deployment version, when that version was deployed,
and the URLs of its web endpoints. Used after a deploy (runner.py) and on refresh (app.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import modal
import modal.experimental
from modal.exception import NotFoundError

from .modal_internals import web_urls


def deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    """{app_id, deployment_version, deployed_at, web_urls} of the app deployed as `name`, or None when
    none is (never deployed, or stopped). deployed_at is ISO 8601 in UTC, "" when Modal has none."""
    try:
        app = modal.App.lookup(name, environment_name=environment)
    except NotFoundError:
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
