"""The one-time setup jobs: download the weights, compile the DeepGEMM kernels, verify both.

Pure Python on filesystem paths, no Modal: `serving/app.py` wraps each job in a Modal Function with
the right image, hardware and volumes (mounted at the config's paths), and the tests run the same
jobs on temporary directories. Collaborators that would touch the network, a GPU or the wall clock
(the Hub downloader, the compile argv, `sleep`, `now`) are parameters, so tests inject real but
harmless stand-ins instead of mocking these functions.

Every failure tells the operator what to run next.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from serving import commands, jit_caches
from serving.config import CONFIG_ENV_VAR, DOWNLOAD_RECORD, WEIGHT_SENTINEL, DeploymentConfig
from serving.log_redaction import LineSink, print_line

if TYPE_CHECKING:
    import tenacity

# What an operator runs to repair each half of the setup. A Pulumi-managed stack triggers the same
# jobs from `pulumi up`; a plain Modal deployment runs them by hand. A non-default config reaches
# `modal run` through the CONFIG_ENV_VAR environment variable (JSON of DeploymentConfig).
FIX_DOWNLOAD = "run `modal run serving/app.py::download_model` (Pulumi-managed stack: `pulumi up`)"
FIX_COMPILE = "run `modal run serving/app.py::compile_deepgemm` (Pulumi-managed stack: `pulumi up`)"
# Kernels whose marker is still there but were built for other weights: Pulumi sees the marker and
# would not run the compile job again by itself.
FIX_RECOMPILE = (
    "run `modal run serving/app.py::compile_deepgemm` (Pulumi-managed stack: `pulumi up --replace <URN>` "
    "with the compile-kernels job's URN from `pulumi stack --show-urns`)"
)

# Where huggingface_hub's snapshot_download(local_dir=...) keeps what it knows of each file it wrote:
# "<file>.metadata", whose first line is the commit the requested revision resolved to. The commit a
# branch like `main` pointed at when the download ran is read from there, without asking the Hub.
HUB_DOWNLOAD_METADATA_DIR = os.path.join(".cache", "huggingface", "download")
_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


# Dummy-weights mode fetches what SGLang needs to build the model with random weights: configs,
# tokenizer files and the repo's custom modelling code (--trust-remote-code). The index is JSON, so
# the sentinel exists in this mode too.
DUMMY_WEIGHTS_PATTERNS = ("*.json", "*.py", "config*", "tokenizer*", "*.tiktoken", "*.model")

# HTTP statuses worth retrying: timeouts, rate limiting and server-side failures. Everything else
# from the Hub (401 bad token, 403 gated, 404 unknown repo or revision, ...) fails the same way
# every time, so retrying would only burn the backoff.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# How many missing shards a failure message lists by name before summarising the rest.
MISSING_SHARDS_SHOWN = 5

Downloader = Callable[..., Any]
Sleep = Callable[[float], None]
Clock = Callable[[], datetime.datetime]


class SetupIncomplete(RuntimeError):
    """The volumes do not hold what this config needs; the message says what to run."""


class DownloadFailed(RuntimeError):
    """snapshot_download failed permanently or ran out of attempts."""


class CompileFailed(RuntimeError):
    """The DeepGEMM compile exited non-zero; no marker was written."""


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- download -----------------------------------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """True for errors a later attempt can get past (network, timeouts, 429/5xx from the Hub)."""
    try:
        import httpx2
        from huggingface_hub import errors as hub_errors
    except ImportError:  # an image without huggingface-hub: only the stdlib cases below apply
        hub_errors = httpx2 = None

    if hub_errors is not None:
        # Configuration, not the network: HF_HUB_OFFLINE=1 set where it should not be.
        if isinstance(error, hub_errors.OfflineModeIsEnabled):
            return False
        # Raised by snapshot_download when the Hub cannot be reached at all.
        if isinstance(error, hub_errors.LocalEntryNotFoundError | hub_errors.XetDownloadError):
            return True
        if isinstance(error, hub_errors.HfHubHTTPError):
            response = getattr(error, "response", None)
            return getattr(response, "status_code", None) in TRANSIENT_HTTP_STATUSES
    if httpx2 is not None:
        if isinstance(error, httpx2.TransportError):
            return True
        if isinstance(error, httpx2.HTTPStatusError):
            return error.response.status_code in TRANSIENT_HTTP_STATUSES
    return isinstance(error, ConnectionError | TimeoutError)


def hub_snapshot_download(**kwargs: Any) -> Any:
    """The production downloader: huggingface_hub.snapshot_download, imported only when used so
    the SGLang image (compile, verify, serve) never needs this project's huggingface-hub pin."""
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def read_download_record(cfg: DeploymentConfig) -> dict | None:
    return _read_json(cfg.download_record_path)


def snapshot_commit(cfg: DeploymentConfig) -> str | None:
    """The commit the snapshot in cfg.model_path was downloaded at (its index's Hub metadata), or
    None when the files did not come from snapshot_download(local_dir=...)."""
    path = os.path.join(cfg.model_path, HUB_DOWNLOAD_METADATA_DIR, f"{WEIGHT_SENTINEL}.metadata")
    try:
        with open(path) as handle:
            first_line = handle.readline().strip()
    except OSError:
        return None
    return first_line if _COMMIT_HASH.fullmatch(first_line) else None


def recorded_commit(cfg: DeploymentConfig) -> str | None:
    """The commit the download record says the weights on the volume come from."""
    record = read_download_record(cfg)
    return record.get("commit") if isinstance(record, dict) else None


def weights_present(cfg: DeploymentConfig) -> bool:
    """The sentinel exists and the completion record describes the weights this config asks for."""
    record = read_download_record(cfg)
    return os.path.exists(cfg.sentinel_path) and record is not None and record.get("weights") == cfg.weights_inputs()


def download(
    cfg: DeploymentConfig,
    *,
    downloader: Downloader = hub_snapshot_download,
    sleep: Sleep = time.sleep,
    now: Clock = _utc_now,
    environ: Mapping[str, str] | None = None,
    log: LineSink = print_line,
) -> dict:
    """Fetch the snapshot into cfg.model_path unless it is already there.

    Up to cfg.download.attempts attempts; before attempt n+1 waits n x backoff_seconds (30 s, 60 s,
    90 s, ...) and only after a transient error. Returns a small JSON-able summary.
    """
    summary = {"path": cfg.model_path, "sentinel": cfg.sentinel_path, "weights": cfg.weights_inputs()}
    if weights_present(cfg):
        log(f"[download] {cfg.model.repo}@{cfg.model.revision} already in {cfg.model_path}; skipping")
        return {**summary, "skipped": True, "attempts": 0, "commit": recorded_commit(cfg)}
    if _adoptable_snapshot(cfg):
        # Written by someone else's snapshot_download (e.g. the reference recipe): every shard its
        # index names is there, so there is nothing to fetch. Only the completion record is ours.
        _record_download(cfg, 0, now())
        commit = recorded_commit(cfg)
        log(f"[download] complete snapshot found in {cfg.model_path} (commit {commit or 'unknown'}): "
            "recorded it, downloaded nothing")  # fmt: skip
        return {**summary, "skipped": False, "adopted": True, "attempts": 0, "commit": commit}

    os.makedirs(cfg.model_path, exist_ok=True)
    log(f"[download] {cfg.model.repo}@{cfg.model.revision} ({cfg.model.weights} weights) -> {cfg.model_path}")
    retrying = _retrying(cfg, sleep=sleep, log=log)
    _fetch(cfg, retrying, downloader, _snapshot_arguments(cfg, os.environ if environ is None else environ))
    attempts = retrying.statistics.get("attempt_number", 1)
    _record_download(cfg, attempts, now())
    commit = recorded_commit(cfg)
    log(f"[download] done after {attempts} attempt(s); {cfg.model.revision} was commit {commit or 'unknown'}")
    return {**summary, "skipped": False, "attempts": attempts, "commit": commit}


def _adoptable_snapshot(cfg: DeploymentConfig) -> bool:
    """A complete full-weights snapshot without a completion record of ours: the index and every shard
    it names, holding at least the bytes it lists, and (when both are commits) of the pinned one. A
    record of other weights means the config changed them: that is a download, not an adoption."""
    if cfg.model.weights != "full" or read_download_record(cfg) is not None:
        return False
    shards = _shard_check(cfg)
    if shards is None or shards.missing or shards.truncated:
        return False
    commit = snapshot_commit(cfg)
    return commit is None or not _COMMIT_HASH.fullmatch(cfg.model.revision) or commit == cfg.model.revision


def _snapshot_arguments(cfg: DeploymentConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The downloader's keyword arguments: which snapshot, where to, how much of it, with what token."""
    arguments: dict[str, Any] = {
        "repo_id": cfg.model.repo,
        "revision": cfg.model.revision,
        "local_dir": cfg.model_path,
        "max_workers": cfg.download.max_workers,
        "allow_patterns": list(DUMMY_WEIGHTS_PATTERNS) if cfg.model.weights == "dummy" else None,
    }
    # HF_TOKEN is read by huggingface_hub itself; a secret that names its key differently is passed on.
    if cfg.secrets.hf_token_key != "HF_TOKEN" and environ.get(cfg.secrets.hf_token_key):
        arguments["token"] = environ[cfg.secrets.hf_token_key]
    return arguments


def _retrying(cfg: DeploymentConfig, *, sleep: Sleep, log: LineSink) -> tenacity.Retrying:
    """The retry policy of the download: transient errors only, linearly growing backoff."""
    import tenacity  # here, not at module top: the SGLang image runs compile/verify from this module

    def announce_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log(
            f"[download] attempt {state.attempt_number}/{cfg.download.attempts} failed with a transient error "
            f"({type(error).__name__}: {error}); retrying in {state.upcoming_sleep:.0f} s"
        )

    backoff = cfg.download.backoff_seconds
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(cfg.download.attempts),
        wait=tenacity.wait_incrementing(start=backoff, increment=backoff),
        retry=tenacity.retry_if_exception(is_transient),
        sleep=sleep,
        before_sleep=announce_retry,
        reraise=True,
    )


def _fetch(cfg: DeploymentConfig, retrying: tenacity.Retrying, downloader: Downloader, arguments: dict) -> None:
    """Run the downloader under the retry policy; a failure says whether retrying later can help."""
    try:
        retrying(downloader, **arguments)
    except Exception as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        if is_transient(error):
            raise DownloadFailed(
                f"download of {cfg.model.repo}@{cfg.model.revision} still failing after {attempts} attempts "
                f"({type(error).__name__}: {error}); {FIX_DOWNLOAD} again later, it resumes"
            ) from error
        raise DownloadFailed(
            f"download of {cfg.model.repo}@{cfg.model.revision} failed with a permanent error, not retried "
            f"({type(error).__name__}: {error}); check model.repo/model.revision in the config and the "
            f"'{cfg.secrets.hf_token}' secret's {cfg.secrets.hf_token_key}, then {FIX_DOWNLOAD}"
        ) from error


def _record_download(cfg: DeploymentConfig, attempts: int, finished_at: datetime.datetime) -> None:
    """Write the completion record, once the snapshot is one SGLang can serve."""
    if not os.path.exists(cfg.sentinel_path):
        raise DownloadFailed(
            f"{cfg.model.repo}@{cfg.model.revision} has no {os.path.basename(cfg.sentinel_path)}: not a sharded "
            "safetensors snapshot SGLang can serve; fix model.repo in the config"
        )
    _write_json(
        cfg.download_record_path,
        {
            "weights": cfg.weights_inputs(),
            "commit": snapshot_commit(cfg),
            "finished_at": finished_at.isoformat(),
            "attempts": attempts,
        },
    )


# --- compile ------------------------------------------------------------------------------------


def argv_hash(argv: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(argv)).encode()).hexdigest()[:16]


def compile_marker(cfg: DeploymentConfig, argv: Sequence[str], finished_at: datetime.datetime) -> dict:
    """What the compile ran for; verify compares kernel_fingerprint against the current config."""
    return {
        "model": cfg.weights_inputs(),
        "model_commit": recorded_commit(cfg),
        "gpu": cfg.hardware.modal_gpu,
        "sglang_version": cfg.sglang.version,
        "sglang_image": cfg.sglang.image,
        "kernel_fingerprint": cfg.kernel_fingerprint(),
        "kernel_inputs": cfg.kernel_inputs(),
        # What the run left in each JIT cache on the volume (files per cache directory).
        "jit_caches": jit_caches.inventory(cfg.storage.kernels_mount),
        "argv_sha256": argv_hash(argv),
        "finished_at": finished_at.isoformat(),
    }


def current_compile_marker(cfg: DeploymentConfig) -> dict | None:
    """The marker of a finished compile for this config's kernel fingerprint and for the weights on
    the volume, else None."""
    marker = _fingerprint_marker(cfg)
    return marker if marker is not None and _commit_mismatch(cfg, marker) is None else None


def _fingerprint_marker(cfg: DeploymentConfig) -> dict | None:
    marker = _read_json(cfg.compile_marker_path)
    if not isinstance(marker, dict) or marker.get("kernel_fingerprint") != cfg.kernel_fingerprint():
        return None
    return marker


def _commit_mismatch(cfg: DeploymentConfig, marker: dict) -> tuple[str, str] | None:
    """(compiled for, on the volume) when the kernels were built for weights at another commit: a
    revision like `main` moved and the weights were downloaded again. None when they agree or
    either is unknown (a marker or record written before commits were recorded)."""
    compiled, downloaded = marker.get("model_commit"), recorded_commit(cfg)
    if compiled and downloaded and compiled != downloaded:
        return compiled, downloaded
    return None


def kernels_present(cfg: DeploymentConfig) -> bool:
    return current_compile_marker(cfg) is not None


def compile_kernels(
    cfg: DeploymentConfig,
    *,
    argv: Sequence[str] | None = None,
    force: bool = False,
    on_line: LineSink = print_line,
    now: Clock = _utc_now,
    log: LineSink = print_line,
) -> dict:
    """Run the DeepGEMM compile for cfg (argv defaults to commands.compile_command) and record it.

    Refuses without downloaded weights. Skips when the marker for this kernel fingerprint exists,
    unless `force`. Streams the compiler's output line by line as it is produced, and writes the
    marker only after a zero exit.
    """
    if not weights_present(cfg):
        raise SetupIncomplete(
            f"no complete {cfg.model.weights} weights for {cfg.model.repo}@{cfg.model.revision} in "
            f"{cfg.model_path}: the compile loads the model, so {FIX_DOWNLOAD} first"
        )
    summary = {"marker": cfg.compile_marker_path, "kernel_fingerprint": cfg.kernel_fingerprint()}
    if kernels_present(cfg) and not force:
        log(f"[compile] kernels for fingerprint {cfg.kernel_fingerprint()} already compiled; skipping")
        return {**summary, "skipped": True}
    if force and os.path.exists(cfg.compile_marker_path):
        # A marker must only ever describe a finished compile; a forced run may fail half-way.
        os.remove(cfg.compile_marker_path)

    legacy_marker = os.path.join(cfg.storage.kernels_mount, f".compiled-{cfg.model.directory}")
    if os.path.exists(legacy_marker):
        log(f"[compile] {legacy_marker} (the reference recipe's marker) names no SGLang release, GPU or settings, "
            f"so it proves nothing about SGLang {cfg.sglang.version}: compiling")  # fmt: skip
    argv = list(argv) if argv is not None else commands.compile_command(cfg)
    # The server's environment (DeepGEMM cache dir, offline Hub, unbuffered Python, so the compiler's
    # progress reaches Modal's log as it happens rather than at exit).
    env = commands.subprocess_env({**os.environ, **commands.serve_env(cfg)})
    log(f"[compile] {' '.join(argv[:3])} ... ({len(argv)} args, sha256 {argv_hash(argv)})")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    ) as process:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, ""):
            on_line(line)
        returncode = process.wait()
    if returncode != 0:
        raise CompileFailed(
            f"DeepGEMM compile exited with code {returncode}; no marker written (output above). "
            f"Fix the cause, then {FIX_COMPILE}"
        )

    marker = compile_marker(cfg, argv, now())
    _write_json(cfg.compile_marker_path, marker)
    warmed = ", ".join(f"{name} {count}" for name, count in marker["jit_caches"].items())
    log(f"[compile] done; marker {cfg.compile_marker_path}; files in the JIT caches: {warmed}")
    return {**summary, "skipped": False}


# --- verify -------------------------------------------------------------------------------------


def verify(cfg: DeploymentConfig) -> dict:
    """Check the volumes against cfg; JSON-able report with `ok` and actionable `failures`."""
    failures: list[str] = []
    weights = _verify_weights(cfg, failures)
    kernels = _verify_kernels(cfg, failures)
    return {"ok": not failures, "failures": failures, "weights": weights, "kernels": kernels}


def require_ready(cfg: DeploymentConfig) -> dict:
    """verify(), raising SetupIncomplete with every failure if anything is missing (server start)."""
    report = verify(cfg)
    if not report["ok"]:
        lines = "\n".join(f"  - {failure}" for failure in report["failures"])
        raise SetupIncomplete(f"volumes are not ready for this config ({CONFIG_ENV_VAR}):\n{lines}")
    return report


def _verify_weights(cfg: DeploymentConfig, failures: list[str]) -> dict:
    report: dict[str, Any] = {"path": cfg.model_path, "sentinel": cfg.sentinel_path, "mode": cfg.model.weights}
    if not os.path.exists(cfg.sentinel_path):
        failures.append(f"weights: {cfg.sentinel_path} is missing, so nothing was downloaded there; {FIX_DOWNLOAD}")
        return report

    record = read_download_record(cfg)
    if record is None:
        failures.append(
            f"weights: {DOWNLOAD_RECORD} is missing in {cfg.model_path}: the download was interrupted or "
            f"predates this tool; {FIX_DOWNLOAD} (it resumes and keeps finished files)"
        )
    elif record.get("weights") != cfg.weights_inputs():
        failures.append(
            f"weights: the volume holds {_describe_weights(record.get('weights'))} but the config asks for "
            f"{_describe_weights(cfg.weights_inputs())}; {FIX_DOWNLOAD}"
        )

    if cfg.model.weights == "dummy":
        # Random weights: there are no shards to count.
        report["shards"] = "skipped (dummy weights)"
        return report

    shards = _shard_check(cfg)
    if shards is None:
        failures.append(f"weights: {cfg.sentinel_path} has no weight_map (truncated or corrupt); {FIX_DOWNLOAD}")
        return report
    report.update(shards=len(shards.names), missing_shards=len(shards.missing), size_bytes=shards.size_on_disk,
                  index_bytes=shards.expected_size)  # fmt: skip
    if shards.missing:
        missing = shards.missing
        shown = ", ".join(missing[:MISSING_SHARDS_SHOWN]) + (" ..." if len(missing) > MISSING_SHARDS_SHOWN else "")
        failures.append(f"weights: {len(missing)} of {len(shards.names)} shards missing ({shown}); {FIX_DOWNLOAD}")
    elif shards.truncated:
        failures.append(
            f"weights: shards hold {shards.size_on_disk} bytes but the index lists {shards.expected_size} bytes of "
            f"tensors (truncated files); {FIX_DOWNLOAD}"
        )
    return report


@dataclasses.dataclass(frozen=True)
class ShardCheck:
    """The shards a snapshot's index names, against what is on disk."""

    names: list[str]
    missing: list[str]
    size_on_disk: int
    expected_size: int | None  # the index's metadata.total_size: the bytes of tensors

    @property
    def truncated(self) -> bool:
        # Each shard holds its tensors plus a small header, so the files can only be larger.
        return not self.missing and isinstance(self.expected_size, int) and self.size_on_disk < self.expected_size


def _shard_check(cfg: DeploymentConfig) -> ShardCheck | None:
    """The index's shards against the files in cfg.model_path; None without a readable weight_map."""
    index = _read_json(cfg.sentinel_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        return None
    names = sorted(set(weight_map.values()))
    missing = [name for name in names if not os.path.isfile(os.path.join(cfg.model_path, name))]
    size_on_disk = sum(os.path.getsize(os.path.join(cfg.model_path, name)) for name in names if name not in missing)
    expected_size = (index.get("metadata") or {}).get("total_size")
    return ShardCheck(names, missing, size_on_disk, expected_size if isinstance(expected_size, int) else None)


def _verify_kernels(cfg: DeploymentConfig, failures: list[str]) -> dict:
    report: dict[str, Any] = {"marker": cfg.compile_marker_path, "kernel_fingerprint": cfg.kernel_fingerprint()}
    marker = _fingerprint_marker(cfg)
    mismatch = _commit_mismatch(cfg, marker) if marker is not None else None
    if marker is not None and mismatch is None:
        report.update(compiled_at=marker.get("finished_at"), sglang_version=marker.get("sglang_version"),
                      model_commit=marker.get("model_commit"))  # fmt: skip
        return report
    if mismatch is not None:
        compiled, downloaded = mismatch
        failures.append(
            f"kernels: compiled for {cfg.model.repo} at commit {compiled}, but the weights volume holds commit "
            f"{downloaded} (model.revision '{cfg.model.revision}' moved and the weights were downloaded again); "
            f"{FIX_RECOMPILE}"
        )
        return report

    others = _other_markers(cfg)
    if not others:
        failures.append(
            f"kernels: no DeepGEMM compile marker in {cfg.storage.kernels_mount} (expected "
            f"{cfg.compile_marker_name}); the server would JIT-compile for 10-15 minutes at every cold start; "
            f"{FIX_COMPILE}"
        )
        return report
    latest = max(others, key=lambda item: str(item.get("finished_at", "")))
    changed = _changed_kernel_inputs(latest.get("kernel_inputs"), cfg.kernel_inputs())
    report["stale_markers"] = [item.get("kernel_fingerprint") for item in others]
    failures.append(
        f"kernels: compiled kernels are for fingerprint {latest.get('kernel_fingerprint')}, the config needs "
        f"{cfg.kernel_fingerprint()} (kernel-affecting settings changed: {', '.join(changed) or 'unknown'}); "
        f"{FIX_COMPILE}"
    )
    return report


def _other_markers(cfg: DeploymentConfig) -> list[dict]:
    pattern = os.path.join(cfg.storage.kernels_mount, f".compiled-{glob.escape(cfg.model.directory)}-*.json")
    markers = (_read_json(path) for path in glob.glob(pattern) if path != cfg.compile_marker_path)
    return [marker for marker in markers if isinstance(marker, dict)]


def _changed_kernel_inputs(before: Any, after: dict) -> list[str]:
    """Dotted names of kernel inputs that differ, e.g. ['speculative.num_steps', 'sglang.version']."""
    if not isinstance(before, dict):
        return []
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{name}" for name in _changed_kernel_inputs(old, new)]
        elif old != new:
            changed.append(key)
    return changed


def _describe_weights(weights: Any) -> str:
    if not isinstance(weights, dict):
        return "unknown weights"
    return f"{weights.get('weights')} weights of {weights.get('repo')}@{weights.get('revision')}"


# --- files --------------------------------------------------------------------------------------


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_json(path: str, data: dict) -> None:
    # Write-then-rename: a reader (or a crash) never sees half a marker.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(partial, path)
