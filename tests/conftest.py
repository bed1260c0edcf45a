"""Shared pytest fixtures. Each package keeps its fixtures in its own module; import them here."""

from tests.modal_control_plane.fixtures import modal_control_plane

__all__ = ["modal_control_plane"]
