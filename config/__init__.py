"""Settings as data, read from the environment in one place (no I/O)."""

from config.parsing import SettingsError
from config.settings import Settings, load_settings, setting_names

__all__ = ["Settings", "SettingsError", "load_settings", "setting_names"]
