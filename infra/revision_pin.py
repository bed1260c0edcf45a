"""The preview warning for a production stack whose model revision is a branch (or tag), not a commit.

`main` moves upstream: the next download of a prod stack (a new stack, an emptied volume) would fetch
whatever it points at then. The download job records the commit it actually fetched (the stack
output `model_commit`), and the warning says how to pin it. Reads nothing but the config: no Modal,
no Hub.
"""

from __future__ import annotations

import re

import pulumi

from infra.settings import DEPLOYMENT_KEY, PRODUCTION_STACKS, StackSettings, config_key

# A full git commit hash, which is what the Hub resolves a revision to.
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def is_commit(revision: str) -> bool:
    return _COMMIT_HASH.fullmatch(revision) is not None


def unpinned_revision_warning(settings: StackSettings) -> str | None:
    revision = settings.deployment.model.revision
    if settings.stack not in PRODUCTION_STACKS or is_commit(revision):
        return None
    return (
        f"{config_key(DEPLOYMENT_KEY)}.model.revision is '{revision}', a branch or tag, not a commit: it moves "
        "upstream, and the next download of this stack (a new volume, an emptied one) would fetch other weights. "
        f"Pin the commit it downloaded: `pulumi stack output model_commit --stack {settings.stack}` after an `up`, "
        "then set model.revision to it (the download then runs once more and finds its files in place; the "
        "compile runs once more)."
    )


def warn_if_unpinned(settings: StackSettings) -> None:
    warning = unpinned_revision_warning(settings)
    if warning is not None:
        pulumi.log.warn(warning)
