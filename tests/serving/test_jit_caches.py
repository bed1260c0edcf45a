"""Each JIT cache variable of serving/jit_caches.py is one the pinned releases read, and points where
SGLang 0.5.23 itself would put that cache under our SGLANG_CACHE_DIR.

Checked against what is installed here: SGLang 0.5.23 (./scripts/setup), torch and triton (the test
extras). FlashInfer, TileLang and the CUTLASS DSL are GPU packages that are not installed; for them
the release SGLang 0.5.23 pins (its package metadata) must be the one the table names, so a new pin
fails here until someone reads that release's reader of the variable again.
"""

from __future__ import annotations

import importlib.util
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

from serving import commands, jit_caches
from serving.config import DeploymentConfig

CACHES = {cache.env_var: cache for cache in jit_caches.JIT_CACHES}


def installed_source(relative: str) -> Path | None:
    """The installed file `relative` (e.g. "triton/knobs.py"), or None when its package is absent."""
    spec = importlib.util.find_spec(relative.split("/", 1)[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).parent / relative
    return path if path.is_file() else None


def sglang_pins() -> dict[str, str]:
    """package -> version of each `name==version` requirement of the installed SGLang."""
    pins = {}
    for requirement in metadata.requires("sglang") or []:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


@pytest.mark.parametrize("cache", jit_caches.JIT_CACHES, ids=lambda cache: cache.env_var)
def test_each_variable_is_read_by_the_release_it_names(cache: jit_caches.JitCache) -> None:
    name, _, version = cache.package.partition("==")
    source = installed_source(cache.reader)
    if source is not None:
        assert re.search(rf"\b{cache.env_var}\b", source.read_text()), f"{cache.reader} never names {cache.env_var}"
        if version and name != "torch":  # torch: the test extras install a nearby release, not the pin
            assert metadata.version(name) == version
    else:
        # Not installed: the table's release must be the one SGLang pins.
        assert sglang_pins().get(name.lower().replace("_", "-")) == version, (name, sglang_pins())


def test_sglang_redirects_exactly_these_third_party_caches_to_the_paths_we_set() -> None:
    from sglang.srt import environ

    cfg = DeploymentConfig()
    ours = commands.image_env(cfg)
    before = os.environ.get("SGLANG_CACHE_DIR")
    os.environ["SGLANG_CACHE_DIR"] = ours["SGLANG_CACHE_DIR"]
    try:
        redirected = environ.third_party_cache_defaults()
    finally:
        if before is None:
            del os.environ["SGLANG_CACHE_DIR"]
        else:
            os.environ["SGLANG_CACHE_DIR"] = before
    # Every cache SGLang itself moves under SGLANG_CACHE_DIR, we set to the same place.
    assert {name: ours[name] for name in redirected} == redirected
    # The two it leaves where they were are the two we add.
    assert set(CACHES) - set(redirected) == {"SGLANG_CACHE_DIR", "SGLANG_JIT_CACHE_DIR", "CUTE_DSL_CACHE_DIR"}


def test_sglang_jit_kernels_do_not_follow_sglang_cache_dir_on_their_own() -> None:
    # Why SGLANG_JIT_CACHE_DIR is set: its default is a fixed path under the home directory.
    source = installed_source(CACHES["SGLANG_JIT_CACHE_DIR"].reader)
    assert source is not None
    assert 'envs.SGLANG_JIT_CACHE_DIR.get() or "~/.cache/sglang/jit"' in source.read_text()


def test_every_cache_is_on_the_kernels_volume_and_in_the_kernel_inputs() -> None:
    cfg = DeploymentConfig.model_validate({"storage": {"kernels_mount": "/kernels"}})
    env = commands.serve_env(cfg)
    assert all(env[name].startswith("/kernels/jit-cache") for name in CACHES)
    # The compile's trigger names the caches it warms: another set of caches runs it again.
    assert cfg.kernel_inputs()["jit_caches"] == jit_caches.layout()
    assert set(jit_caches.layout()) == set(CACHES)
