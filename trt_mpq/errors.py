"""One error path: every user-facing failure is a TrtMpqError with a message written for the user.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; library users catch the class.
"""


class TrtMpqError(Exception):
    """Base class of all errors trt-mpq reports to the user."""

    exit_code = 2


class ModelError(TrtMpqError):
    """The model file is missing, unreadable, or not something trt-mpq can work on."""


class DataError(TrtMpqError):
    """Calibration or evaluation data is missing, malformed, or does not fit the model."""


class ConfigError(TrtMpqError):
    """An option, a preprocessing file or a combination of settings is invalid."""


class BackendError(TrtMpqError):
    """A backend is unavailable or failed to build or run a model."""
