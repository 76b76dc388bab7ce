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

    def require_positive_ints(self, *names: str) -> None:
        """Each named field must be an int >= 1."""
        for name in names:
            value = getattr(self, name)
            self.require(
                isinstance(value, int) and value >= 1, f"{name} must be >= 1, got {value!r}"
            )

    def require_grid_transformer(self) -> None:
        """The shared checks of a transformer that predicts a spatial grid (fields grid_size,
        width, heads, mlp_ratio, dropout); turns grid_size into a tuple (JSON gives a list)."""
        need = self.require
        self.grid_size = tuple(self.grid_size)
        need(
            len(self.grid_size) == 2 and min(self.grid_size) >= 1,
            f"grid_size must be (h, w) >= 1, got {self.grid_size}",
        )
        need(self.width % self.heads == 0, f"width {self.width} not divisible by {self.heads}")
        need(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")

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
