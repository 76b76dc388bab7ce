"""What every model config dataclass shares: dict round trip, presets, validation errors."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Mixin for a config dataclass. Subclasses set `presets`, a dict of data by name."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    def require(self, ok: bool, message: str) -> None:
        """Raise ValueError("ClassName: message") unless `ok`."""
        if not ok:
            raise ValueError(f"{type(self).__name__}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**data)

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """A preset by name, with fields overridden."""
        if name not in cls.presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(cls.presets)}")
        return cls.from_dict({**cls.presets[name], **overrides})
