"""The smoke-test snippets the stack exports, run as an operator would paste them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from infra.exports import API_KEY_ENV_VAR, curl_snippet

KEY = "canary-snippet-key-3f7a9c"


def test_the_curl_snippet_keeps_the_api_key_out_of_curls_argv(tmp_path):
    # A `curl` that records its argv and stdin instead of calling anything.
    record = tmp_path / "curl.json"
    fake_curl = tmp_path / "curl"
    fake_curl.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(record)!r}, 'w'))\n"
    )
    fake_curl.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", API_KEY_ENV_VAR: KEY}

    snippet = curl_snippet("https://example--glm-server-serve.modal.run/v1", "glm-5.1")
    subprocess.run(["bash", "-c", snippet], env=env, check=True, timeout=30)

    seen = json.loads(record.read_text())
    assert not any(KEY in arg for arg in seen["argv"])  # `ps` shows argv to every user
    assert seen["stdin"] == f"Authorization: Bearer {KEY}\n"
    assert seen["argv"][seen["argv"].index("-H") + 1] == "@-"  # read as a header from stdin
    assert seen["argv"][0] == "-sS" and seen["argv"][1].endswith("/v1/chat/completions")
    assert json.loads(seen["argv"][seen["argv"].index("-d") + 1])["model"] == "glm-5.1"
