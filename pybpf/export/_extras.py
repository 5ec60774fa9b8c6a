"""Optional dependencies of the exporters: imported on first use, with an error naming
the extra to install when missing (the core import never needs them)."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]

_EXTRA_OF = {"prometheus_client": "prometheus", "opentelemetry": "otel"}


class MissingExtraError(ImportError):
    """An exporter's optional dependency is not installed; the message names the extra."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` (e.g. ``"--prometheus"``), or raise
    :class:`MissingExtraError` saying which ``pybpf[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA_OF.get(top, top)
        raise MissingExtraError(
            f"{feature} needs {exc.name or module}, which is not installed: "
            f"pip install 'pybpf[{extra}]'") from None
