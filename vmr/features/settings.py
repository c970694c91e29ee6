"""How feature rows were made, in one type from config to manifest to model card: :class:`FeatureSettings`.

Two rows are comparable only when the CLIP ``model``, its ``pretrained`` weights tag, the sampling rate ``fps``
(samples per second of video) and the ``extractor_version`` agree; ``dim`` (the row width) is recorded where known and
compared only when both sides know it. The defaults below are the one place vmr's default settings are written; every
config dataclass, command and the model card read them from here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vmr.errors import InputError

DEFAULT_MODEL = "ViT-B-32"  # open_clip model name
DEFAULT_PRETRAINED = "openai"  # open_clip weights tag; "none" = seeded random weights (tests, offline demo)
DEFAULT_FPS = 0.5  # samples per second: one row every 2 s, as the MATR and A2FA papers' CLIP features
EXTRACTOR_VERSION = "1"  # bump when decoding, sampling or preprocessing changes what a feature row means
IMPORTED_EXTRACTOR_VERSION = "imported-npz-1"  # features imported from Moment-DETR / UniVTG style folders


@dataclass(frozen=True)
class FeatureSettings:
    """What a feature row is: CLIP ``model`` and ``pretrained`` tag, ``fps`` samples per second, the
    ``extractor_version`` and the feature ``dim`` (0 = unknown, not compared)."""

    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    fps: float = DEFAULT_FPS
    extractor_version: str = EXTRACTOR_VERSION
    dim: int = 0

    @classmethod
    def from_entry(cls, entry: dict) -> "FeatureSettings":
        """From a manifest entry or any dict with the same keys (``dim`` optional). InputError when one is missing."""
        try:
            return cls(str(entry["model"]), str(entry["pretrained"]), float(entry["fps"]),
                       str(entry["extractor_version"]), int(entry.get("dim") or 0))
        except KeyError as e:
            raise InputError(f"feature settings lack {e.args[0]!r}: {sorted(entry)}") from None

    @classmethod
    def of(cls, source: Any) -> "FeatureSettings":
        """From a :class:`FeatureSettings`, a manifest entry / dict, any dataclass with the same fields, a
        :class:`vmr.features.store.FeatureStore` (its common settings) or a model card (its ``features``)."""
        if isinstance(source, FeatureSettings):
            return source
        if isinstance(getattr(source, "features", None), FeatureSettings):  # a ModelCard
            return source.features
        if hasattr(source, "feature_settings"):  # a FeatureStore: its settings, the rows' dim
            return source.feature_settings()
        if dataclasses.is_dataclass(source):
            source = dataclasses.asdict(source)
        if isinstance(source, dict):
            return cls.from_entry(source)
        raise TypeError(f"cannot read feature settings from {type(source).__name__}")

    def describe(self) -> str:
        dim = f", {self.dim}-d" if self.dim else ""
        return (f"CLIP {self.model} weights {self.pretrained!r}, {self.fps:g} samples/s, "
                f"extractor version {self.extractor_version}{dim}")

    def differences(self, other: "FeatureSettings") -> list[str]:
        """Names of the settings that differ (``dim`` only when both know it)."""
        out = [k for k in ("model", "pretrained", "extractor_version") if getattr(self, k) != getattr(other, k)]
        if not math.isclose(self.fps, other.fps, rel_tol=1e-9, abs_tol=1e-12):
            out.append("fps")
        if self.dim and other.dim and self.dim != other.dim:
            out.append("dim")
        return out

    def matches(self, other: "FeatureSettings") -> bool:
        """True when rows made with ``self`` and with ``other`` are comparable (:meth:`differences` is empty)."""
        return not self.differences(other)

    def without_dim(self) -> "FeatureSettings":
        """The same settings with ``dim`` unknown: what an extraction is asked for before any row exists."""
        return dataclasses.replace(self, dim=0)


__all__ = ["FeatureSettings", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "DEFAULT_FPS", "EXTRACTOR_VERSION",
           "IMPORTED_EXTRACTOR_VERSION"]
