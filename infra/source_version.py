"""Which version of this repository a deploy comes from: the git commit of the checkout the program
runs in, and the deployment tag it gives Modal by default.

Read with the local `git` (no network), once per program run. Outside a git checkout (or without
git) both are "": deploys then carry no tag unless the stack sets `glm-modal:deployTag`.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from serving.stack_file import REPO_ROOT

# What the tag of a checkout with uncommitted changes ends with: the commit alone would claim a
# source that was not what got deployed.
DIRTY_SUFFIX = "-dirty"


@dataclass(frozen=True)
class SourceVersion:
    commit: str  # the full commit hash, "" outside a git checkout
    dirty: bool  # uncommitted changes to tracked files, or untracked files git does not ignore

    @property
    def tag(self) -> str:
        """The default deployment tag: the commit, "<commit>-dirty" for a dirty tree (46 characters,
        within Modal's 50)."""
        return self.commit + DIRTY_SUFFIX if self.commit and self.dirty else self.commit


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:  # no git on this machine
        return None
    return done.stdout if done.returncode == 0 else None


def source_version(root: Path = REPO_ROOT) -> SourceVersion:
    commit = (_git("rev-parse", "--verify", "HEAD", cwd=root) or "").strip()
    if not commit:
        return SourceVersion(commit="", dirty=False)
    status = _git("status", "--porcelain", cwd=root)
    return SourceVersion(commit=commit, dirty=bool(status and status.strip()))
