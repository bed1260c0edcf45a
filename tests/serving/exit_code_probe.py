"""A container stand-in: starts SGLangServer (with the real os._exit) and then just serves.

test_lifecycle.py runs this as its own process with a stand-in SGLang told to crash after warmup,
and checks that the crash monitor ends this process with exit code 1, as it would a Modal container.

usage: python exit_code_probe.py <api_key> <served_model_name> <port> -- <sglang argv...>
"""

from __future__ import annotations

import sys
import threading

from serving.lifecycle import SGLangServer

# Exit code if the crash monitor never fires: distinguishable from the monitor's 1.
EXIT_CODE_MONITOR_SILENT = 99

# How long to "serve" before giving up on the monitor.
SERVE_SECONDS = 30


def main(args: list[str]) -> int:
    api_key, served_model_name, port, separator, *argv = args
    assert separator == "--"
    server = SGLangServer(
        argv, port=int(port), api_key=api_key, served_model_name=served_model_name, health_poll_interval=0.05
    )
    server.start()
    print("probe: ready", flush=True)
    threading.Event().wait(SERVE_SECONDS)
    return EXIT_CODE_MONITOR_SILENT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
