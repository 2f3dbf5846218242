"""The preset names: every plugin defines one Config of each, and a sweep picks one."""
from __future__ import annotations

PRESETS = ("tiny", "small", "paper")
