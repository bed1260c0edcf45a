"""Download, compile and verify jobs (serving/jobs.py) on temporary directories.

The Hugging Face Hub is replaced by `FakeHub`, a downloader with snapshot_download's keyword
interface that writes a small sharded snapshot (or raises real huggingface_hub errors); the DeepGEMM
compiler by short `python -c` programs. Sleeps and timestamps are injected, so nothing waits.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import sys
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import errors as hub_errors

from serving import jobs
from serving.config import DeploymentConfig

FIXED_NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
SHARD_COUNT = 3
TENSOR_BYTES_PER_SHARD = 100
SHARD_HEADER_BYTES = 16  # a safetensors file is header + tensors, so files are larger than the tensors
# The commit `main` resolves to on the fake Hub, and the one it moves to.
MAIN_COMMIT = "1f0c" + "a" * 36
MOVED_MAIN_COMMIT = "7b2e" + "b" * 36


def make_cfg(tmp_path: Path, **sections: dict) -> DeploymentConfig:
    """Production defaults with both mounts under tmp_path, plus per-section overrides."""
    data = DeploymentConfig().model_dump()
    data["storage"].update(weights_mount=str(tmp_path / "model-cache"), kernels_mount=str(tmp_path / "dg-cache"))
    for section, values in sections.items():
        _merge(data[section], values)
    return DeploymentConfig.model_validate(data)


def _merge(target: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict):
            _merge(target[key], value)
        else:
            target[key] = value


def hub_error(cls: type[Exception], status: int) -> Exception:
    request = httpx2.Request("GET", "https://huggingface.co/api/models/zai-org/GLM-5.1-FP8/revision/main")
    return cls(f"{status} error from the Hub", response=httpx2.Response(status, request=request))


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: raises the scripted errors first, then writes
    a snapshot (index + shards + config, or only the JSON files when allow_patterns excludes shards)."""

    def __init__(self, *errors: Exception, commit: str = MAIN_COMMIT):
        self.errors = list(errors)
        self.commit = commit
        self.calls: list[dict] = []
        self.fetched: list[str] = []  # files it had to transfer

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        local_dir = Path(kwargs["local_dir"])
        local_dir.mkdir(parents=True, exist_ok=True)
        shards = [f"model-{i:05d}-of-{SHARD_COUNT:05d}.safetensors" for i in range(1, SHARD_COUNT + 1)]
        index = {
            "metadata": {"total_size": SHARD_COUNT * TENSOR_BYTES_PER_SHARD},
            "weight_map": {f"layers.{i}.weight": shard for i, shard in enumerate(shards)},
        }
        files = {"model.safetensors.index.json": json.dumps(index).encode(), "config.json": b"{}"}
        if kwargs.get("allow_patterns") is None:
            files.update({shard: b"\0" * (SHARD_HEADER_BYTES + TENSOR_BYTES_PER_SHARD) for shard in shards})
        for name, data in files.items():
            # What snapshot_download(local_dir=...) keeps per file: commit, etag, timestamp. Like it, a
            # file already there at this commit is not transferred again: a download resumes.
            metadata = local_dir / jobs.HUB_DOWNLOAD_METADATA_DIR / f"{name}.metadata"
            if (local_dir / name).exists() and metadata.exists() and metadata.read_text().startswith(self.commit):
                continue
            (local_dir / name).write_bytes(data)
            self.fetched.append(name)
            metadata.parent.mkdir(parents=True, exist_ok=True)
            metadata.write_text(f"{self.commit}\netag-{len(data)}\n1767322800.0\n")
        return str(local_dir)


class Sleeps(list):
    """Records the backoff the download asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def download(cfg: DeploymentConfig, hub: FakeHub, sleeps: Sleeps | None = None, **kwargs) -> dict:
    return jobs.download(
        cfg,
        downloader=hub,
        sleep=sleeps if sleeps is not None else Sleeps(),
        now=lambda: FIXED_NOW,
        log=lambda _: None,
        **kwargs,
    )


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SUCCEEDING_COMPILE = python_argv("print('compiled', flush=True)")
FAILING_COMPILE = python_argv("import sys; print('nvcc: error', flush=True); sys.exit(2)")


def compile_kernels(cfg: DeploymentConfig, argv: list[str], **kwargs) -> dict:
    kwargs.setdefault("on_line", lambda _: None)
    return jobs.compile_kernels(cfg, argv=argv, now=lambda: FIXED_NOW, log=lambda _: None, **kwargs)


def set_up(cfg: DeploymentConfig) -> None:
    """A finished download and compile for cfg."""
    download(cfg, FakeHub())
    compile_kernels(cfg, SUCCEEDING_COMPILE)


# --- download -----------------------------------------------------------------------------------


def test_download_fetches_the_pinned_snapshot_into_the_volume_and_records_it(tmp_path):
    cfg = make_cfg(tmp_path, model={"revision": "0123abc"})
    hub = FakeHub()

    result = download(cfg, hub)

    assert hub.calls == [
        {
            "repo_id": "zai-org/GLM-5.1-FP8",
            "revision": "0123abc",
            "local_dir": cfg.model_path,
            "max_workers": 8,
            "allow_patterns": None,
        }
    ]
    assert result == {
        "path": cfg.model_path,
        "sentinel": cfg.sentinel_path,
        "weights": cfg.weights_inputs(),
        "skipped": False,
        "attempts": 1,
        "commit": MAIN_COMMIT,
    }
    assert cfg.model_path == str(tmp_path / "model-cache" / "GLM-5.1-FP8")
    record = json.loads(Path(cfg.model_path, jobs.DOWNLOAD_RECORD).read_text())
    assert record == {"weights": cfg.weights_inputs(), "commit": MAIN_COMMIT, "finished_at": FIXED_NOW.isoformat(),
                      "attempts": 1}  # fmt: skip


def test_the_download_records_the_commit_a_branch_resolved_to_and_reports_it_when_skipping(tmp_path):
    cfg = make_cfg(tmp_path, model={"revision": "main"})
    download(cfg, FakeHub(commit=MAIN_COMMIT))

    again = download(cfg, FakeHub(commit=MOVED_MAIN_COMMIT))

    assert again["skipped"] is True and again["commit"] == MAIN_COMMIT  # what the volume holds
    assert jobs.recorded_commit(cfg) == MAIN_COMMIT


def recipe_snapshot(cfg: DeploymentConfig) -> None:
    """What the reference recipe leaves: a snapshot_download into the volume, and no record of ours."""
    FakeHub()(repo_id=cfg.model.repo, revision="main", local_dir=cfg.model_path, allow_patterns=None)


def test_a_complete_snapshot_without_our_record_is_adopted_without_asking_the_hub(tmp_path):
    cfg = make_cfg(tmp_path)
    recipe_snapshot(cfg)
    hub = FakeHub()

    result = download(cfg, hub)

    assert hub.calls == []
    assert result["adopted"] is True and result["skipped"] is False  # the record is new: commit the volume
    assert result["commit"] == MAIN_COMMIT
    assert jobs.weights_present(cfg) and jobs.verify(cfg)["weights"]["missing_shards"] == 0


def test_a_snapshot_missing_a_shard_is_completed_not_restarted(tmp_path):
    cfg = make_cfg(tmp_path)
    recipe_snapshot(cfg)
    os.remove(Path(cfg.model_path, f"model-00002-of-{SHARD_COUNT:05d}.safetensors"))
    hub = FakeHub()

    result = download(cfg, hub)

    assert len(hub.calls) == 1 and hub.fetched == [f"model-00002-of-{SHARD_COUNT:05d}.safetensors"]
    assert "adopted" not in result and jobs.weights_present(cfg)


def test_a_snapshot_of_another_pinned_commit_is_not_adopted(tmp_path):
    cfg = make_cfg(tmp_path, model={"revision": MOVED_MAIN_COMMIT})
    recipe_snapshot(cfg)  # at MAIN_COMMIT
    hub = FakeHub(commit=MOVED_MAIN_COMMIT)

    download(cfg, hub)

    assert len(hub.calls) == 1 and jobs.recorded_commit(cfg) == MOVED_MAIN_COMMIT


def test_a_snapshot_without_hub_metadata_records_no_commit(tmp_path):
    cfg = make_cfg(tmp_path)

    def copied_by_hand(**kwargs):  # e.g. files rsynced into the volume, not snapshot_download's work
        FakeHub()(**kwargs)
        for metadata in Path(kwargs["local_dir"], jobs.HUB_DOWNLOAD_METADATA_DIR).iterdir():
            metadata.unlink()

    result = download(cfg, copied_by_hand)

    assert result["commit"] is None and jobs.recorded_commit(cfg) is None


def test_download_skips_when_the_sentinel_and_record_exist(tmp_path):
    cfg = make_cfg(tmp_path)
    download(cfg, FakeHub())
    hub = FakeHub()

    result = download(cfg, hub)

    assert hub.calls == []
    assert result["skipped"] is True and result["attempts"] == 0


def test_download_runs_again_when_the_volume_holds_other_weights(tmp_path):
    # A dummy rehearsal leaves the index (the sentinel) behind, but no shards.
    download(make_cfg(tmp_path, model={"weights": "dummy"}), FakeHub())
    hub = FakeHub()

    result = download(make_cfg(tmp_path), hub)

    assert len(hub.calls) == 1 and hub.calls[0]["allow_patterns"] is None
    assert result["skipped"] is False


def test_download_resumes_an_interrupted_download_whose_index_already_landed(tmp_path):
    cfg = make_cfg(tmp_path)
    Path(cfg.model_path).mkdir(parents=True)
    Path(cfg.sentinel_path).write_text("{}")  # no completion record: the job did not finish
    hub = FakeHub()

    download(cfg, hub)

    assert len(hub.calls) == 1


def test_dummy_weights_fetch_only_config_tokenizer_and_code(tmp_path):
    cfg = make_cfg(tmp_path, model={"weights": "dummy"})
    hub = FakeHub()

    download(cfg, hub)

    patterns = hub.calls[0]["allow_patterns"]
    assert {"*.json", "*.py"} <= set(patterns) and any("tokenizer" in pattern for pattern in patterns)
    assert not any("safetensors" in pattern or pattern == "*" for pattern in patterns)


@pytest.mark.parametrize(
    ("attempts", "transient_failures", "expected_sleeps"),
    [(3, 1, [30]), (3, 2, [30, 60]), (4, 3, [30, 60, 90])],
)
def test_download_retries_transient_errors_with_30_60_90_backoff(
    tmp_path, attempts, transient_failures, expected_sleeps
):
    cfg = make_cfg(tmp_path, download={"attempts": attempts})
    transient = [
        hub_error(hub_errors.HfHubHTTPError, 503),
        ConnectionResetError("reset by peer"),
        httpx2.ReadTimeout("slow"),
    ]
    hub = FakeHub(*transient[:transient_failures])
    sleeps = Sleeps()

    result = download(cfg, hub, sleeps)

    assert sleeps == expected_sleeps
    assert len(hub.calls) == transient_failures + 1
    assert result["skipped"] is False and result["attempts"] == transient_failures + 1
    assert os.path.exists(cfg.sentinel_path)


def test_download_gives_up_after_the_configured_attempts_and_says_how_to_resume(tmp_path):
    cfg = make_cfg(tmp_path)  # 3 attempts
    hub = FakeHub(*(hub_error(hub_errors.HfHubHTTPError, 502) for _ in range(5)))
    sleeps = Sleeps()

    with pytest.raises(jobs.DownloadFailed) as failure:
        download(cfg, hub, sleeps)

    assert len(hub.calls) == 3
    assert sleeps == [30, 60]
    assert "after 3 attempts" in str(failure.value)
    assert "modal run serving/app.py::download_model" in str(failure.value)
    assert isinstance(failure.value.__cause__, hub_errors.HfHubHTTPError)
    assert not os.path.exists(os.path.join(cfg.model_path, jobs.DOWNLOAD_RECORD))


@pytest.mark.parametrize(
    "error",
    [
        hub_error(hub_errors.RepositoryNotFoundError, 401),  # bad or missing token
        hub_error(hub_errors.GatedRepoError, 403),
        hub_error(hub_errors.RepositoryNotFoundError, 404),
        hub_error(hub_errors.RevisionNotFoundError, 404),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["401", "403-gated", "404-repo", "404-revision", "disk-full"],
)
def test_download_does_not_retry_permanent_errors(tmp_path, error):
    cfg = make_cfg(tmp_path)
    hub = FakeHub(error)
    sleeps = Sleeps()

    with pytest.raises(jobs.DownloadFailed) as failure:
        download(cfg, hub, sleeps)

    assert len(hub.calls) == 1 and sleeps == []
    message = str(failure.value)
    assert "permanent" in message and "huggingface-secret" in message and "model.revision" in message
    assert failure.value.__cause__ is error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (hub_error(hub_errors.HfHubHTTPError, 500), True),
        (hub_error(hub_errors.HfHubHTTPError, 429), True),
        (hub_error(hub_errors.HfHubHTTPError, 408), True),
        (httpx2.ConnectError("refused"), True),
        (TimeoutError("read timed out"), True),
        (hub_errors.LocalEntryNotFoundError("the Hub could not be reached"), True),
        (hub_error(hub_errors.HfHubHTTPError, 400), False),
        (hub_error(hub_errors.RepositoryNotFoundError, 401), False),
        (hub_errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1"), False),
        (ValueError("bad repo id"), False),
    ],
)
def test_transient_error_classification(error, transient):
    assert jobs.is_transient(error) is transient


def test_download_passes_a_token_stored_under_another_key(tmp_path):
    cfg = make_cfg(tmp_path, secrets={"hf_token_key": "HUGGINGFACE_TOKEN"})
    hub = FakeHub()

    download(cfg, hub, environ={"HUGGINGFACE_TOKEN": "hf_not_a_real_token"})

    assert hub.calls[0]["token"] == "hf_not_a_real_token"


def test_download_leaves_hf_token_to_huggingface_hub(tmp_path):
    hub = FakeHub()

    download(make_cfg(tmp_path), hub, environ={"HF_TOKEN": "hf_not_a_real_token"})

    assert "token" not in hub.calls[0]


def test_download_rejects_a_snapshot_without_an_index(tmp_path):
    cfg = make_cfg(tmp_path)

    with pytest.raises(jobs.DownloadFailed, match="model.safetensors.index.json"):
        download(cfg, lambda **kwargs: Path(kwargs["local_dir"]).mkdir(parents=True, exist_ok=True))

    assert not os.path.exists(os.path.join(cfg.model_path, jobs.DOWNLOAD_RECORD))


# --- compile ------------------------------------------------------------------------------------


def test_compile_refuses_without_weights_and_never_starts_the_compiler(tmp_path):
    cfg = make_cfg(tmp_path)
    witness = tmp_path / "compiler-ran"

    with pytest.raises(jobs.SetupIncomplete) as refusal:
        compile_kernels(cfg, python_argv(f"open({str(witness)!r}, 'w').close()"))

    assert "modal run serving/app.py::download_model" in str(refusal.value)
    assert not witness.exists()
    assert not os.path.exists(cfg.compile_marker_path)


def test_compile_streams_output_line_by_line_while_the_compiler_runs(tmp_path):
    cfg = make_cfg(tmp_path)
    download(cfg, FakeHub())
    go = tmp_path / "first-line-seen"
    # The compiler prints its second line only after the test has received the first one, so the
    # run can only succeed if lines are delivered as they are produced, not when the process ends.
    compiler = python_argv(
        "import os, sys, time\n"
        "print('kernel 1/2 compiled', flush=True)\n"
        "deadline = time.monotonic() + 10\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    if time.monotonic() > deadline: sys.exit(3)\n"
        "    time.sleep(0.01)\n"
        "print('kernel 2/2 compiled', flush=True)\n"
    )
    lines = []

    def on_line(line: str) -> None:
        lines.append(line)
        go.touch()

    result = compile_kernels(cfg, compiler, on_line=on_line)

    assert lines == ["kernel 1/2 compiled\n", "kernel 2/2 compiled\n"]
    assert result == {
        "marker": cfg.compile_marker_path,
        "kernel_fingerprint": cfg.kernel_fingerprint(),
        "skipped": False,
    }


def test_compile_runs_with_the_serving_environment(tmp_path):
    cfg = make_cfg(tmp_path)
    download(cfg, FakeHub())
    lines = []

    compile_kernels(
        cfg,
        python_argv("import os; print(os.environ['SGLANG_DG_CACHE_DIR'], os.environ['HF_HUB_OFFLINE'])"),
        on_line=lines.append,
    )

    assert lines == [f"{cfg.storage.kernels_mount} 1\n"]


# A compile that builds what the server's start builds: a Triton kernel and a FlashInfer JIT op, each
# where its library's environment variable says.
WARMING_COMPILE = python_argv(
    "import os, pathlib\n"
    "triton = pathlib.Path(os.environ['TRITON_CACHE_DIR'], 'abc')\n"
    "triton.mkdir(parents=True)\n"
    "(triton / 'kernel.cubin').write_text('sm100')\n"
    "ops = pathlib.Path(os.environ['FLASHINFER_WORKSPACE_BASE'], '.cache', 'flashinfer', '100', 'cached_ops')\n"
    "ops.mkdir(parents=True)\n"
    "(ops / 'norm.so').write_text('so')\n"
    "print('compiled', flush=True)\n"
)


def test_compile_writes_a_marker_of_what_it_compiled_for(tmp_path):
    cfg = make_cfg(tmp_path, model={"revision": "0123abc"})
    download(cfg, FakeHub())

    compile_kernels(cfg, WARMING_COMPILE)

    marker = json.loads(Path(cfg.compile_marker_path).read_text())
    assert marker == {
        "model": {"repo": "zai-org/GLM-5.1-FP8", "revision": "0123abc", "weights": "full"},
        "model_commit": MAIN_COMMIT,
        "gpu": "B200:8",
        "sglang_version": "0.5.23",
        "sglang_image": cfg.sglang.image,
        "kernel_fingerprint": cfg.kernel_fingerprint(),
        "kernel_inputs": json.loads(json.dumps(cfg.kernel_inputs())),
        # The JIT caches its run warmed, on the kernels volume (FlashInfer's lives in the base directory).
        "jit_caches": {".": 1, "cute_dsl": 0, "inductor": 0, "jit": 0, "nv": 0, "tilelang": 0, "triton": 1},
        "argv_sha256": jobs.argv_hash(WARMING_COMPILE),
        "finished_at": FIXED_NOW.isoformat(),
    }
    assert Path(cfg.compile_marker_path).parent == tmp_path / "dg-cache"
    assert (tmp_path / "dg-cache" / "jit-cache" / "triton" / "abc" / "kernel.cubin").is_file()


def test_a_failed_compile_writes_no_marker_and_says_what_to_rerun(tmp_path):
    cfg = make_cfg(tmp_path)
    download(cfg, FakeHub())
    lines = []

    with pytest.raises(jobs.CompileFailed) as failure:
        compile_kernels(cfg, FAILING_COMPILE, on_line=lines.append)

    assert lines == ["nvcc: error\n"]
    assert "code 2" in str(failure.value) and "modal run serving/app.py::compile_deepgemm" in str(failure.value)
    assert not os.path.exists(cfg.compile_marker_path)


def test_compile_skips_when_its_marker_matches_and_force_recompiles(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)

    assert compile_kernels(cfg, FAILING_COMPILE)["skipped"] is True

    # A forced run that fails leaves no marker behind: the old one no longer describes the cache.
    with pytest.raises(jobs.CompileFailed):
        compile_kernels(cfg, FAILING_COMPILE, force=True)
    assert not os.path.exists(cfg.compile_marker_path)


def test_weights_downloaded_again_at_a_moved_main_never_pair_with_the_old_kernels(tmp_path):
    cfg = make_cfg(tmp_path, model={"revision": "main"})
    set_up(cfg)
    # The weights volume is emptied and the download runs again; `main` has moved meanwhile.
    shutil.rmtree(cfg.model_path)
    download(cfg, FakeHub(commit=MOVED_MAIN_COMMIT))

    report = jobs.verify(cfg)
    with pytest.raises(jobs.SetupIncomplete, match=MOVED_MAIN_COMMIT):
        jobs.require_ready(cfg)  # the server refuses to start on them
    recompiled = compile_kernels(cfg, SUCCEEDING_COMPILE)  # the marker's fingerprint alone does not skip it

    assert report["ok"] is False
    [failure] = report["failures"]
    assert f"compiled for zai-org/GLM-5.1-FP8 at commit {MAIN_COMMIT}" in failure
    assert f"holds commit {MOVED_MAIN_COMMIT}" in failure and "pulumi up --replace" in failure
    assert recompiled["skipped"] is False
    assert json.loads(Path(cfg.compile_marker_path).read_text())["model_commit"] == MOVED_MAIN_COMMIT
    assert jobs.verify(cfg)["ok"] is True


# --- verify -------------------------------------------------------------------------------------


def test_verify_passes_after_download_and_compile(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)

    report = jobs.verify(cfg)

    assert report["ok"] is True and report["failures"] == []
    assert report["weights"]["shards"] == SHARD_COUNT and report["weights"]["missing_shards"] == 0
    assert report["weights"]["size_bytes"] == SHARD_COUNT * (SHARD_HEADER_BYTES + TENSOR_BYTES_PER_SHARD)
    assert report["kernels"]["kernel_fingerprint"] == cfg.kernel_fingerprint()
    assert json.loads(json.dumps(report)) == report  # returned from a Modal function: JSON-able


def test_verify_on_empty_volumes_names_both_fixes(tmp_path):
    report = jobs.verify(make_cfg(tmp_path))

    assert report["ok"] is False
    weights_failure, kernels_failure = report["failures"]
    assert "model.safetensors.index.json is missing" in weights_failure
    assert "modal run serving/app.py::download_model" in weights_failure and "pulumi up" in weights_failure
    assert "no DeepGEMM compile marker" in kernels_failure
    assert "modal run serving/app.py::compile_deepgemm" in kernels_failure and "pulumi up" in kernels_failure


def test_verify_reports_stale_kernels_after_a_kernel_affecting_change(tmp_path):
    set_up(make_cfg(tmp_path))
    changed = make_cfg(tmp_path, launch={"speculative": {"num_steps": 2, "num_draft_tokens": 3}})

    report = jobs.verify(changed)

    assert report["ok"] is False
    (failure,) = report["failures"]
    assert "speculative.num_steps" in failure and "speculative.num_draft_tokens" in failure
    assert "modal run serving/app.py::compile_deepgemm" in failure


def test_verify_ignores_changes_that_do_not_shape_kernels(tmp_path):
    set_up(make_cfg(tmp_path))
    retuned = make_cfg(
        tmp_path,
        scaling={"max_containers": 1, "scaledown_window": 60},
        launch={"memory": {"max_running_requests": 32}},
        timeouts={"server": 3600},
    )

    assert jobs.verify(retuned)["failures"] == []


def test_verify_reports_a_missing_shard(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)
    Path(cfg.model_path, "model-00002-of-00003.safetensors").unlink()

    report = jobs.verify(cfg)

    (failure,) = report["failures"]
    assert "1 of 3 shards missing (model-00002-of-00003.safetensors)" in failure
    assert "modal run serving/app.py::download_model" in failure
    assert report["weights"]["missing_shards"] == 1


def test_verify_reports_truncated_shards(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)
    Path(cfg.model_path, "model-00003-of-00003.safetensors").write_bytes(b"\0" * 10)

    (failure,) = jobs.verify(cfg)["failures"]

    assert "truncated" in failure and "modal run serving/app.py::download_model" in failure


def test_verify_reports_an_interrupted_download(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)
    Path(cfg.model_path, jobs.DOWNLOAD_RECORD).unlink()

    (failure,) = jobs.verify(cfg)["failures"]

    assert jobs.DOWNLOAD_RECORD in failure and "modal run serving/app.py::download_model" in failure


def test_verify_skips_shard_checks_for_dummy_weights(tmp_path):
    cfg = make_cfg(tmp_path, model={"weights": "dummy"})
    set_up(cfg)

    report = jobs.verify(cfg)

    assert report["ok"] is True
    assert report["weights"]["shards"] == "skipped (dummy weights)"


def test_verify_reports_dummy_weights_where_full_weights_are_needed(tmp_path):
    set_up(make_cfg(tmp_path, model={"weights": "dummy"}))

    report = jobs.verify(make_cfg(tmp_path))

    weights_failure = report["failures"][0]
    assert "holds dummy weights" in weights_failure and "asks for full weights" in weights_failure
    assert "modal run serving/app.py::download_model" in weights_failure


def test_require_ready_raises_with_every_failure(tmp_path):
    with pytest.raises(jobs.SetupIncomplete) as failure:
        jobs.require_ready(make_cfg(tmp_path))

    assert "download_model" in str(failure.value) and "compile_deepgemm" in str(failure.value)


def test_require_ready_returns_the_report_when_ready(tmp_path):
    cfg = make_cfg(tmp_path)
    set_up(cfg)

    assert jobs.require_ready(cfg)["ok"] is True
