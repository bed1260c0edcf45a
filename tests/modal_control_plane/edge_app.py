"""A Modal app shaped like our server behind Modal's edge, for the control plane's proxy auth tests.

`Server` is the serving app's shape: a class on 8 B200s with a scaledown window, serving HTTP with
`@modal.web_server(requires_proxy_auth=True)`. `guarded` is a web function (not a class) with proxy
auth, where the definition carries the flag itself rather than per method, on no GPU. `open_server`
is a web function on one B200 without proxy auth, whose edge lets anything through.

The bodies never run here: the web front (web.py) answers for them. Apart from sample_app.py so that
the deploy tests there keep their exact set of functions.
"""

import modal

PORT = 8000
SCALEDOWN_WINDOW_SECONDS = 300
GPU = "B200:8"
GPU_COUNT = 8

image = modal.Image.debian_slim(python_version="3.11")
app = modal.App("edge-app", image=image, include_source=False)


@app.cls(gpu=GPU, scaledown_window=SCALEDOWN_WINDOW_SECONDS)
class Server:
    @modal.web_server(port=PORT, startup_timeout=600, requires_proxy_auth=True)
    def serve(self):
        pass


@app.function(gpu="B200", scaledown_window=SCALEDOWN_WINDOW_SECONDS)
@modal.web_server(port=PORT, startup_timeout=600)
def open_server():
    pass


@app.function()
@modal.web_server(port=PORT, startup_timeout=600, requires_proxy_auth=True)
def guarded():
    pass
