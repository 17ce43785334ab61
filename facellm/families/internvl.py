"""internvl family line: registry entries and tiny offline models (being built)."""

from __future__ import annotations

from facellm.families.family import Family

FAMILIES: list[Family] = []
