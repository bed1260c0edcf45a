"""The keep-alive pings this app's own deployment, at the URL Modal gives its Server, with the API key
and the proxy auth token Modal's edge wants.

Its target is never a setting: the request carries both. Proven end to end: serving/app.py is
deployed (with keep-alive on) to the local control plane, then its `keep_warm` body runs against
that deployment, and the control plane's edge and web front behind the Server's URL record the
authenticated, authorized /health.
"""

from __future__ import annotations

import json
import subprocess
import sys

from serving.config import CONFIG_ENV_VAR, DeploymentConfig
from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.web import WebFront
from tests.stack.harness import REPO_ROOT

API_KEY = "canary-keepalive-key-0123456789abcdef"

# Deploy the app as `modal deploy` would, then run the scheduled function's body here.
DEPLOY_AND_PING = """
import json
from serving import app as served
served.app.deploy()
print(json.dumps({"status": served.keep_warm.local()}))
"""


def test_keep_warm_pings_the_health_of_its_own_deployment_with_the_api_key_and_edge_token() -> None:
    cfg = DeploymentConfig.model_validate({"app_name": "glm-keepalive", "keepalive": {"enabled": True}})
    web = WebFront().start()
    cp = ControlPlane(web_url_of=web.url_for).start()
    web.attach(cp)
    # The secrets the app mounts exist before a deploy (the stack creates them first).
    cp.create_secret(cfg.secrets.hf_token, {cfg.secrets.hf_token_key: "hf_canaryHfToken7e3b91d0"})
    cp.create_secret(cfg.secrets.api_key, {cfg.secrets.api_key_key: API_KEY})
    token = cp.create_proxy_token("keepalive", environments=["main"])
    edge_secret = {cfg.secrets.edge_token_id_key: token.token_id, cfg.secrets.edge_token_secret_key: token.token_secret}
    cp.create_secret(cfg.secrets.edge_token, edge_secret)
    try:
        env = cp.subprocess_env()
        # The container's environment: what its secrets hold.
        env.update({CONFIG_ENV_VAR: cfg.to_json(), cfg.secrets.api_key_key: API_KEY, **edge_secret})
        ran = subprocess.run([sys.executable, "-c", DEPLOY_AND_PING], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        requests = list(web.requests)
        edge_records = list(web.edge_records)
        health_urls = {f"{url.rstrip('/')}/health" for url in cp.app(cfg.app_name, "main").web_urls.values()}
        base = f"http://127.0.0.1:{web.port}"
    finally:
        web.stop()
        cp.stop()

    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.splitlines()[-1]) == {"status": 200}
    # One request, to /health under the Server's own URL, carrying the token and the key.
    assert [(record.reason, record.token_id) for record in edge_records] == [("authenticated", token.token_id)]
    assert len(requests) == 1
    method, path, authorized = requests[0]
    assert method == "GET" and authorized
    assert f"{base}{path}" in health_urls
