"""Stage 4, the backends: where lowered models run, behind one interface (``base.Backend``), chosen by name."""

from .base import (
    Backend,
    BackendContext,
    Chosen,
    LayerProfile,
    Session,
    backend_class,
    backend_names,
    open_backend,
    restore_backend,
)

__all__ = ["Backend", "BackendContext", "Chosen", "LayerProfile", "Session", "backend_class", "backend_names",
           "open_backend", "restore_backend"]
