"""What every model config dataclass shares: named presets and a dict form for checkpoints."""
from __future__ import annotations

from dataclasses import asdict, replace


class PresetConfig:
    """Mixin for a config dataclass with ``PRESETS`` (names), a ``synthetic(**kw)`` classmethod and,
    optionally, ``coco(**kw)``; every other preset is the dataclass defaults (the paper's CUB setting)."""

    PRESETS: tuple = ()

    @classmethod
    def preset(cls, name: str, **kw):
        if name not in cls.PRESETS:
            raise ValueError(f"preset: expected one of {cls.PRESETS}, got {name!r}")
        if name == "synthetic":
            return cls.synthetic(**kw)
        if name == "coco" and hasattr(cls, "coco"):
            return cls.coco(**kw)
        return replace(cls(), **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**d)
