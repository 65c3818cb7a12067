"""Execution backends behind one protocol; see ``base.REGISTRY``."""

from .base import Backend, BackendOptions, Session, backend_names, get_backend

__all__ = ["Backend", "BackendOptions", "Session", "backend_names", "get_backend"]
