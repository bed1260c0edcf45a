"""A small Modal app shaped like our serving app, for the control plane's own tests.

It has what a deploy of serving/app.py exercises: an image with several layers, a named secret,
a named volume, a CPU function that writes into the volume, a class serving HTTP with
`@modal.web_server` (the recipe's shape) and an `app.server` (modal >= 1.6's shape).
The bodies never run here: the control plane runs whatever a test scripts instead.

The names are read from the environment at import, so a `modal deploy` subprocess and the test
agree on them without sharing anything else.
"""

import os
import subprocess
from pathlib import Path

import modal

APP_NAME = os.environ.get("SAMPLE_APP_NAME", "sample-app")
VOLUME_NAME = "sample-models"
SECRET_NAME = "sample-secret"
MOUNT_PATH = "/models"
PORT = 8000

# The local source shipped with the app is this one file: modal's automatic mount would ship the
# whole top-level package of the importing module (`tests`), which is large and, while other tests
# are edited, fails deploys with "modified during build process".
image = (
    modal.Image.debian_slim(python_version="3.11")
    .apt_install("curl")
    .pip_install("requests==2.32.3")
    .env({"SAMPLE_MODE": os.environ.get("SAMPLE_MODE", "test")})  # another mode: another definition
    .add_local_file(Path(__file__), "/root/sample_app.py")
)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
secret = modal.Secret.from_name(SECRET_NAME)

app = modal.App(APP_NAME, image=image, include_source=False)


@app.function(volumes={MOUNT_PATH: volume}, secrets=[secret], timeout=600)
def write_marker(name: str, contents: str) -> str:
    """Write a marker file into the volume and return its path."""
    path = os.path.join(MOUNT_PATH, name)
    with open(path, "w") as f:
        f.write(contents)
    volume.commit()
    return path


@app.cls(gpu="B200", volumes={MOUNT_PATH: volume}, secrets=[secret])
class Server:
    @modal.enter()
    def start(self):
        self.process = subprocess.Popen(["python", "-m", "http.server", str(PORT)])

    @modal.web_server(port=PORT, startup_timeout=600)
    def serve(self):
        pass

    @modal.method()
    def health(self) -> str:
        return "ok"


@app.server(port=PORT, startup_timeout=600, volumes={MOUNT_PATH: volume})
class Gateway:
    @modal.enter()
    def start(self):
        self.process = subprocess.Popen(["python", "-m", "http.server", str(PORT)])
