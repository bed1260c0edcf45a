"""A local Modal control plane for offline tests: the real modal client, speaking gRPC to us.

Use the `modal_control_plane` pytest fixture (tests/conftest.py re-exports it from `fixtures.py`);
`ControlPlane` (server.py) is the handle it yields. See client_retries.py for what the modal
client retries by itself.
"""

from .calls import CallRecord
from .functions import FunctionCall, ScriptedOutcome, UnscriptedFunctionError, VolumeAccess
from .server import TOKEN_ID, TOKEN_SECRET, ControlPlane

__all__ = [
    "TOKEN_ID",
    "TOKEN_SECRET",
    "CallRecord",
    "ControlPlane",
    "FunctionCall",
    "ScriptedOutcome",
    "UnscriptedFunctionError",
    "VolumeAccess",
]
