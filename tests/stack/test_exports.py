"""The smoke-test snippets the stack exports, run as an operator would paste them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra.exports import API_KEY_ENV_VAR, EDGE_KEY_ENV_VAR, EDGE_SECRET_ENV_VAR, curl_snippet

KEY = "canary-snippet-key-3f7a9c"
EDGE_KEY = "wk-canarySnippetTokenId"
EDGE_SECRET = "ws-canarySnippetTokenSecret9d1e"


@pytest.mark.parametrize("edge_auth", [True, False], ids=["proxy-auth", "open-edge"])
def test_the_curl_snippet_keeps_the_api_key_and_the_edge_token_out_of_curls_argv(tmp_path, edge_auth):
    # A `curl` that records its argv and stdin instead of calling anything.
    record = tmp_path / "curl.json"
    fake_curl = tmp_path / "curl"
    fake_curl.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(record)!r}, 'w'))\n"
    )
    fake_curl.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", API_KEY_ENV_VAR: KEY,
           EDGE_KEY_ENV_VAR: EDGE_KEY, EDGE_SECRET_ENV_VAR: EDGE_SECRET}  # fmt: skip

    snippet = curl_snippet("https://example--glm-server-serve.modal.run/v1", "glm-5.1", edge_auth=edge_auth)
    subprocess.run(["bash", "-c", snippet], env=env, check=True, timeout=30)

    seen = json.loads(record.read_text())
    # `ps` shows argv to every user
    assert not any(KEY in arg or EDGE_SECRET in arg or EDGE_KEY in arg for arg in seen["argv"])
    edge_headers = f"Modal-Key: {EDGE_KEY}\nModal-Secret: {EDGE_SECRET}\n" if edge_auth else ""
    assert seen["stdin"] == f"Authorization: Bearer {KEY}\n" + edge_headers
    assert seen["argv"][seen["argv"].index("-H") + 1] == "@-"  # read as a header from stdin
    assert seen["argv"][0] == "-sS" and seen["argv"][1].endswith("/v1/chat/completions")
    assert json.loads(seen["argv"][seen["argv"].index("-d") + 1])["model"] == "glm-5.1"
