"""Looking Modal objects up by name, read-only: what the resources and the run machinery ask before they
create, adopt, refresh or record anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import modal
from modal.exception import InvalidError, NotFoundError

from providers.modal_access.retry import modal_call

T = TypeVar("T")


def lookup_environment(name: str) -> Any | None:
    """The hydrated environment of that name, or None when Modal has none (a read-only call).

    Asks for the workspace's list (`Environment.objects.list()`, EnvironmentList) rather than
    `Environment.from_name(name).hydrate()`: the latter's answer for a missing name is
    "Environment '<name>' not found" with INVALID_ARGUMENT in Modal's servicer (InvalidError, the
    same error as a malformed request) or NOT_FOUND, while absence from the list means one thing."""

    def find() -> Any | None:
        return next((env for env in modal.Environment.objects.list() if env.name == name), None)

    return modal_call(find, what=f"look up environment '{name}'")


def environment_exists(name: str) -> bool:
    return lookup_environment(name) is not None



def found_in(environment: str, find: Callable[[], T]) -> T | None:
    """`find()`, or None when Modal says there is no such object, its environment included.

    A missing environment may be answered "Environment '<name>' not found" with INVALID_ARGUMENT
    (InvalidError, as in Modal's servicer) as well as NOT_FOUND: an InvalidError means "none" only
    when the environment is indeed gone. Not retried here: callers run it inside `modal_call`."""
    try:
        return find()
    except NotFoundError:
        return None
    except InvalidError:
        if environment_exists(environment):
            raise
        return None


def lookup_volume(environment: str, name: str) -> Any | None:
    """The hydrated volume, or None when there is none, its environment included (a read-only call)."""

    def get() -> Any | None:
        return found_in(environment, modal.Volume.from_name(name, environment_name=environment).hydrate)

    return modal_call(get, what=f"look up volume '{name}' in environment '{environment}'")


def lookup_secret(environment: str, name: str) -> Any | None:
    """The hydrated secret (keys, id; never values), or None when there is none, its environment
    included (a read-only call)."""

    def get() -> Any | None:
        return found_in(environment, modal.Secret.from_name(name, environment_name=environment).hydrate)

    return modal_call(get, what=f"look up secret '{name}' in environment '{environment}'")
