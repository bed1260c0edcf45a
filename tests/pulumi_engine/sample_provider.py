"""A trivial dynamic provider used to prove the engine harness: one file per resource.

It lives in an importable module (not `__main__`) so dill pickles the provider class by
reference, exactly like the real providers in providers/. The provider process imports it from
its working directory (the repository root in these tests).

Inputs: `directory`, `filename` (changing either replaces the file), `content` (update in place),
optional `token` (a secret in the tests), optional `wait_for` (create blocks until that path
exists) and optional `fail` = "create" | "update" | "delete" | "read"
to make that operation raise. Outputs: `path`, `content`, `size`, `token` (same key as the
input, so the engine re-marks it secret), `token_digest` (derived from the secret under another
key, so the engine does NOT mark it unless it is listed in additional_secret_outputs).
Each mutating operation prints one progress line to stdout, the dynamic provider's only channel to
the user. The stack config key "<project>:banner", if set, is prefixed to every created file.
"""

import hashlib
import time
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

# How long create waits for its `wait_for` file before failing (only reached if a test is broken).
WAIT_FOR_LIMIT_S = 60.0
# Inputs whose change means a different file, hence a replacement.
REPLACE_KEYS = ("directory", "filename")
# Inputs that are applied in place.
UPDATE_KEYS = ("content", "token")


class FileProvider(ResourceProvider):
    # Stack config read in configure(); created files start with it when it is set.
    banner: str | None = None

    def configure(self, req: ConfigureRequest) -> None:
        self.banner = req.config.get("banner")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        # In a preview, inputs computed from resources not yet created arrive as Unknown objects:
        # they cannot be judged yet, and must be handed back so the engine keeps them unknown.
        failures = []
        for key in ("directory", "filename", "content"):
            if not isinstance(news.get(key), (str, Unknown)):
                failures.append(CheckFailure(key, f"{key} must be a string"))
        if isinstance(news.get("filename"), str) and ("/" in news["filename"] or not news["filename"]):
            failures.append(CheckFailure("filename", "filename must be a plain, non-empty file name"))
        if news.get("fail") not in (None, "create", "update", "delete", "read"):
            failures.append(CheckFailure("fail", "fail must be one of create, update, delete, read"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in (*REPLACE_KEYS, *UPDATE_KEYS, "fail") if olds.get(k) != news.get(k)]
        replaces = [k for k in changed if k in REPLACE_KEYS]
        return DiffResult(changes=bool(changed), replaces=replaces, stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._maybe_fail(props, "create")
        path = Path(props["directory"]) / props["filename"]
        print(f"creating {path.name}")
        _wait_for(props.get("wait_for"))
        path.write_text((self.banner or "") + props["content"])
        return CreateResult(str(path), _outputs(path, props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self._maybe_fail(props, "read")
        path = Path(id_)
        if not path.exists():
            return ReadResult(None, {})
        return ReadResult(id_, _outputs(path, {**props, "content": path.read_text()}))

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._maybe_fail(news, "update")
        path = Path(id_)
        print(f"updating {path.name}")
        path.write_text(news["content"])
        return UpdateResult(_outputs(path, news))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._maybe_fail(props, "delete")
        path = Path(id_)
        print(f"deleting {path.name}")
        path.unlink(missing_ok=True)

    @staticmethod
    def _maybe_fail(props: dict[str, Any], operation: str) -> None:
        if props.get("fail") == operation:
            raise RuntimeError(f"injected {operation} failure")


def _wait_for(path: str | None) -> None:
    """Blocks until `path` exists, so a test can watch the progress line of a call in flight."""
    deadline = time.monotonic() + WAIT_FOR_LIMIT_S
    while path and not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


class UnknownDiffFileProvider(FileProvider):
    """Answers every diff with DIFF_UNKNOWN (the SDK default), leaving the decision to the engine."""

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult()


def _outputs(path: Path, props: dict[str, Any]) -> dict[str, Any]:
    outs: dict[str, Any] = {
        "directory": props["directory"],
        "filename": props["filename"],
        "path": str(path),
        "content": props["content"],
        "size": len(props["content"]),
    }
    if props.get("token") is not None:
        outs["token"] = props["token"]
        outs["token_digest"] = hashlib.sha256(props["token"].encode()).hexdigest()[:12]
    if props.get("fail") is not None:
        outs["fail"] = props["fail"]
    return outs


class File(pulumi.dynamic.Resource, module="sample", name="File"):
    """The resource class a Pulumi program would declare (used by the mocks tests)."""

    path: pulumi.Output[str]
    size: pulumi.Output[float]
    token_digest: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(FileProvider(), name, {"path": None, "size": None, "token_digest": None, **props}, opts)
