"""Colour strings of the spec: palette names, '#rrggbb', 'rgb(r,g,b)' and 'hsv(h,s,v)'.

A colour string denotes an sRGB (display) colour with components in 0..1. The metadata row
stores it three ways: the canonical string, linear RGB (what Blender's shader nodes take)
and HSV of the sRGB triple (what a person means by hue, saturation and value).
"""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass

from .schema import PALETTE

COLOR_FORMS = "a palette name (" + ", ".join(PALETTE) + "), '#rrggbb', 'rgb(r,g,b)' or 'hsv(h,s,v)' with components in 0..1"

_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")
_FUNC = re.compile(r"^(rgb|hsv)\(\s*([^,()]+)\s*,\s*([^,()]+)\s*,\s*([^,()]+)\s*\)$")


@dataclass(frozen=True)
class Color:
    text: str  # canonical colour string
    rgb: tuple[float, float, float]  # sRGB, 0..1
    hsv: tuple[float, float, float]  # of the sRGB triple, 0..1

    @property
    def linear(self) -> tuple[float, float, float]:
        return tuple(srgb_to_linear(c) for c in self.rgb)  # type: ignore[return-value]


def format_number(x: float) -> str:
    """Shortest exact text of a number ("0.5", "1.0"), used in canonical colour strings."""
    return repr(float(x))


def hsv_string(h: float, s: float, v: float) -> str:
    return f"hsv({format_number(h)},{format_number(s)},{format_number(v)})"


def parse_color(text: object) -> Color:
    """Parse a colour string; raises ValueError saying what is allowed."""
    if not isinstance(text, str):
        raise ValueError(f"a colour must be a string: {COLOR_FORMS}")
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in PALETTE:
        rgb = PALETTE[lowered]
        return Color(lowered, rgb, rgb_to_hsv(rgb))
    match = _HEX.match(stripped)
    if match:
        digits = match.group(1).lower()
        rgb = tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
        return Color("#" + digits, rgb, rgb_to_hsv(rgb))  # type: ignore[arg-type]
    match = _FUNC.match(lowered)
    if match:
        form = match.group(1)
        try:
            comps = tuple(float(match.group(i)) for i in (2, 3, 4))
        except ValueError:
            raise ValueError(f"{form}() takes three numbers in 0..1; allowed: {COLOR_FORMS}") from None
        if not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in comps):
            hint = " (for 0..255 components write '#rrggbb')" if form == "rgb" else ""
            raise ValueError(f"{form}() components must lie in 0..1{hint}")
        if form == "rgb":
            text_out = "rgb(" + ",".join(format_number(c) for c in comps) + ")"
            return Color(text_out, comps, rgb_to_hsv(comps))  # type: ignore[arg-type]
        return Color(hsv_string(*comps), hsv_to_rgb(comps), comps)  # type: ignore[arg-type]
    raise ValueError(f"not a colour; allowed: {COLOR_FORMS}")


def rgb_to_hsv(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*rgb)


def hsv_to_rgb(hsv: tuple[float, float, float]) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(*hsv)


def srgb_to_linear(c: float) -> float:
    """IEC 61966-2-1 sRGB transfer function, inverse (display value → linear)."""
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def linear_to_srgb(c: float) -> float:
    return c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1.0 / 2.4) - 0.055
