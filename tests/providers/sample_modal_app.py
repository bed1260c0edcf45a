"""A small Modal app module for the job and app provider tests, shaped like a serving module.

Like serving/app.py it takes its settings from the environment at import (`SAMPLE_APP_CONFIG`,
JSON), which is what a resource's `module_env` is for: without it the import fails, so a test sees
whether module_env reached the runner. It has a function that writes an artifact into a volume
(the job's proof of work) and a class serving HTTP with `@modal.web_server` (the deployment's web
URL). The bodies never run in tests: the local control plane runs what each test scripts instead.

Tests import it as the top-level module `sample_modal_app`, with this directory put on PYTHONPATH
through module_env: Modal mounts a function's whole top-level package into its containers, and as
`tests.providers.sample_modal_app` that would be the entire test suite.
"""

import json
import os
import subprocess

import modal

# The environment variable our tests put in `module_env`.
CONFIG_ENV_VAR = "SAMPLE_APP_CONFIG"

config = json.loads(os.environ[CONFIG_ENV_VAR])
VOLUME_NAME = config["volume"]
MOUNT_PATH = "/data"
PORT = 8000

image = modal.Image.debian_slim(python_version="3.11").env({CONFIG_ENV_VAR: json.dumps(config)})
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)

app = modal.App(config.get("app_name", "sample-provider-app"), image=image)


@app.function(volumes={MOUNT_PATH: volume}, timeout=600)
def write_artifact() -> dict:
    """Write the marker file this job is proven by."""
    path = os.path.join(MOUNT_PATH, config.get("marker", "done.json"))
    with open(path, "w") as f:
        json.dump({"ok": True}, f)
    volume.commit()
    return {"ok": True, "path": path}


# With a secret named in the config, the server's containers read it (at their start, as on Modal).
web_secrets = [modal.Secret.from_name(config["secret"])] if config.get("secret") else []


@app.cls(volumes={MOUNT_PATH: volume}, secrets=web_secrets)
class Web:
    @modal.enter()
    def start(self) -> None:
        self.process = subprocess.Popen(["python", "-m", "http.server", str(PORT)])

    @modal.web_server(port=PORT, startup_timeout=60)
    def serve(self) -> None:
        pass
