"""The LARY benchmark as 🤗 datasets: layouts, builders, loading, and the `lary prepare` / `lary publish` commands."""

from .builders import LaryBuilder, LaryConfig
from .layout import LAYOUTS, SPLITS, ConfigLayout, get_layout
from .loading import load_lary_split

__all__ = ["LAYOUTS", "SPLITS", "ConfigLayout", "LaryBuilder", "LaryConfig", "get_layout", "load_lary_split"]
