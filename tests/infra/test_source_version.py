"""The default deployment tag: the checkout's commit, "-dirty" when it has uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra.source_version import source_version


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_a_clean_checkout_is_tagged_with_its_commit_and_a_changed_one_as_dirty(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("print('v1')\n")
    git(tmp_path, "add", "app.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1")
    commit = git(tmp_path, "rev-parse", "HEAD")

    clean = source_version(tmp_path)
    (tmp_path / "app.py").write_text("print('v2')\n")
    edited = source_version(tmp_path)
    git(tmp_path, "checkout", "-q", "app.py")
    (tmp_path / "new_module.py").write_text("")
    untracked = source_version(tmp_path)

    assert (clean.commit, clean.tag) == (commit, commit)
    assert (edited.commit, edited.tag) == (commit, f"{commit}-dirty")
    assert untracked.tag == f"{commit}-dirty"  # a new file the deploy would ship is a change too
    assert len(edited.tag) <= 50  # Modal's limit for a deployment tag


def test_outside_a_git_checkout_there_is_no_commit_and_no_tag(tmp_path: Path) -> None:
    version = source_version(tmp_path)

    assert (version.commit, version.tag) == ("", "")
