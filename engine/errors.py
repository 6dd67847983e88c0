"""Errors shared by the configuration modules."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid run configuration value; the message names the field."""
