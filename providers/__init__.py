"""Pulumi dynamic providers for Modal objects: one small provider + resource class per object kind.

The provider classes must stay in this installed package: the engine's provider process finds
them by module path when it unpickles them from state (see providers/base.py).
"""

from .app import ModalAppDeployment
from .environment import ModalEnvironment
from .http_check import HttpCheck
from .job import ModalJob
from .secret import ModalSecret
from .volume import ModalVolume

__all__ = ["HttpCheck", "ModalAppDeployment", "ModalEnvironment", "ModalJob", "ModalSecret", "ModalVolume"]
