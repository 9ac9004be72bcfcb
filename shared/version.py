"""The one place the Gen3D version lives (read by pyproject, the add-on and build_addon.py)."""

__version__ = "0.1.0"
API_VERSION = "1"
