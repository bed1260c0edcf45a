"""The just-in-time caches SGLang and the libraries it pins build when a server starts, kept on the
kernels volume so that a new container loads them instead of building them again.

Without this, everything below lands in the container's home or /tmp and is lost with it: each cold
start on 8 B200s compiles Triton and TileLang kernels, FlashInfer's JIT ops (and downloads its
TRT-LLM cubins), SGLang's own JIT kernels and CuTe DSL kernels, and the CUDA driver's PTX cache.
DeepGEMM's kernels were already on the volume (SGLANG_DG_CACHE_DIR, serving/commands.py).

Who builds them: the compile job. `sglang.compile_deep_gemm` starts the whole server on the serving
GPUs with the serving arguments and sends it a request, so every cache its run touches is written
here and committed with the kernels (its marker lists what each cache holds). What it does not build
(it runs without CUDA graphs: the kernels of the captured batch sizes) the first server container
builds into the same directories, and the volume's background commits keep them for the next one.

Which variables (each checked against the pinned releases in tests/serving/test_jit_caches.py):
SGLang 0.5.23 `import sglang` points TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, CUDA_CACHE_PATH,
TILELANG_CACHE_DIR and FLASHINFER_WORKSPACE_BASE below SGLANG_CACHE_DIR
(`sglang.srt.environ.third_party_cache_defaults`), but with `setdefault`, so an ENV of the image
wins, and only if FlashInfer and Inductor have not read theirs yet; we set each one ourselves, to the
same paths. Two it leaves alone: its JIT kernel cache (SGLANG_JIT_CACHE_DIR, default
~/.cache/sglang/jit whatever SGLANG_CACHE_DIR says) and the CuTe DSL compiler's (CUTE_DSL_CACHE_DIR,
default $TMPDIR/<user>/cutlass_python_cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The directory on the kernels volume that holds every cache below.
CACHE_DIR_NAME = "jit-cache"


@dataclass(frozen=True)
class JitCache:
    env_var: str
    # Below the cache directory ("" for the directory itself).
    subdir: str
    # The release that reads the variable, as SGLang 0.5.23 pins it (its package metadata), and the
    # module that reads it: for the test that checks the name against that release.
    package: str
    reader: str


JIT_CACHES = (
    JitCache("SGLANG_CACHE_DIR", "", "sglang==0.5.23", "sglang/srt/environ.py"),
    JitCache("SGLANG_JIT_CACHE_DIR", "jit", "sglang==0.5.23", "sglang/kernels/jit/utils/compile/cache.py"),
    JitCache("TRITON_CACHE_DIR", "triton", "triton", "triton/knobs.py"),
    JitCache("TORCHINDUCTOR_CACHE_DIR", "inductor", "torch==2.14.1", "torch/_inductor/runtime/cache_dir_utils.py"),
    # Read by the CUDA driver (NVIDIA's CUDA environment variables), not by a Python package.
    JitCache("CUDA_CACHE_PATH", "nv", "sglang==0.5.23", "sglang/srt/environ.py"),
    JitCache("TILELANG_CACHE_DIR", "tilelang", "tilelang==0.1.12", "tilelang/env.py"),
    # FlashInfer puts its cache in <base>/.cache/flashinfer: JIT ops, and the cubins it downloads.
    JitCache("FLASHINFER_WORKSPACE_BASE", "", "flashinfer_python==0.7.2", "flashinfer/jit/env.py"),
    JitCache("CUTE_DSL_CACHE_DIR", "cute_dsl", "nvidia-cutlass-dsl==4.8.0", "cutlass/base_dsl/cache_helpers.py"),
)


def cache_dir(kernels_mount: str) -> str:
    return f"{kernels_mount}/{CACHE_DIR_NAME}"


def cache_env(kernels_mount: str) -> dict[str, str]:
    """Each cache's environment variable -> its directory on the kernels volume."""
    base = cache_dir(kernels_mount)
    return {cache.env_var: f"{base}/{cache.subdir}" if cache.subdir else base for cache in JIT_CACHES}


def layout() -> dict[str, str]:
    """What the compile warms, independent of where the volume is mounted (a kernel input)."""
    return {cache.env_var: f"{CACHE_DIR_NAME}/{cache.subdir}".rstrip("/") for cache in JIT_CACHES}


def inventory(kernels_mount: str) -> dict[str, int]:
    """Files in each cache's own directory now (0: nothing built there), by subdirectory name; the
    compile's marker records it. A cache sharing the base directory is counted there once."""
    base = cache_dir(kernels_mount)
    counts: dict[str, int] = {}
    for name in sorted({cache.subdir for cache in JIT_CACHES}):
        root = os.path.join(base, name) if name else base
        nested = {cache.subdir for cache in JIT_CACHES if cache.subdir} if not name else set()
        total = 0
        for directory, subdirs, files in os.walk(root):
            if directory == root:
                subdirs[:] = [sub for sub in subdirs if sub not in nested]
            total += len(files)
        counts[name or "."] = total
    return counts
