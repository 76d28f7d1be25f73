"""The LARY benchmark as 🤗 datasets: layouts, builders, and the `lary prepare` / `lary publish` commands."""

from .builders import LaryBuilder, LaryConfig
from .layout import LAYOUTS, SPLITS, ConfigLayout, get_layout

__all__ = ["LAYOUTS", "SPLITS", "ConfigLayout", "LaryBuilder", "LaryConfig", "get_layout"]
