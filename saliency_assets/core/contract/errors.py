"""Exceptions that carry a message meant for the user."""


class ConfigError(ValueError):
    """A configuration mistake found before any clip is decoded (exit code 2)."""


class DecodeError(RuntimeError):
    """A clip could not be decoded; the message says why (status ``decode-failed``)."""


class GeometryError(RuntimeError):
    """A clip's geometry could not be established (status ``missing-geometry``)."""


class ModelError(RuntimeError):
    """The model failed on a clip's frames (status ``model-failed``)."""
