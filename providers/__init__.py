"""Pulumi dynamic providers for Modal objects: one small provider + resource class per object kind.

The provider classes must stay in this installed package: the engine's provider process finds
them by module path when it unpickles them from state (see providers/base.py).

Resource classes are imported on first use (PEP 562): `python -m providers.runs.runner`, the child
process every job and deploy starts, then loads only what it needs, and runpy does not find the
runner module already imported when it executes it as __main__.
"""

import importlib

_RESOURCE_MODULES = {
    "HttpCheck": "http_check",
    "ModalAppDeployment": "app",
    "ModalEnvironment": "environment",
    "ModalJob": "job",
    "ModalProxyToken": "proxy_token",
    "ModalSecret": "secret",
    "ModalVolume": "volume",
}

__all__ = sorted(_RESOURCE_MODULES)


def __getattr__(name: str):
    if name not in _RESOURCE_MODULES:
        raise AttributeError(f"module 'providers' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_RESOURCE_MODULES[name]}", __name__), name)
