"""Numbers in the units people read: 0.0021 ratio → ``0.21%``, 6.63e8 bytes → ``632 MiB``.

Called by ``postdeploy.reports.charts`` (axis ticks), ``postdeploy.reports.pages``
(chart captions) and the demo's live table (``testbed.demo``). Pure.

A chart's ``unit`` (``ChartSpec.unit``) names what the query returns:

============  =====================================  ================================
unit          shown as                               example
============  =====================================  ================================
``ratio``     percent                                0.0021 → ``0.21%``
``s``         µs, ms or s, whichever reads best      0.085 → ``85 ms``
``bytes``     B, KiB, MiB, GiB, TiB (powers of 1024)  6.63e8 → ``632 MiB``
``req/s``     the number and the unit                20.13 → ``20.1 req/s``
``h``         hours                                  36 → ``36 h``
anything else the number, then the unit as given     3 → ``3 pods``
============  =====================================  ================================

Numbers keep three significant digits and never use exponents. Axis ticks share
one scale (all in MiB, say) and fall on 1, 2, 2.5 or 5 times a power of ten of it.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Scale", "format_value", "number", "scale_for", "ticks"]


@dataclasses.dataclass(frozen=True)
class Scale:
    """How values of one unit are shown at one magnitude: ``value / divisor`` + ``suffix``."""

    divisor: float
    suffix: str  # with its leading space where one belongs ("%" has none)

    def show(self, value: float, decimals: int | None = None) -> str:
        return number(value / self.divisor, decimals) + self.suffix


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def scale_for(unit: str, magnitude: float) -> Scale:
    """The scale in which values of ``unit`` around ``magnitude`` read best."""
    magnitude = abs(magnitude)
    key = unit.strip()
    if key in ("ratio", "fraction"):
        return Scale(0.01, "%")
    if key in ("percent", "%"):
        return Scale(1.0, "%")
    if key in ("s", "seconds"):
        if magnitude >= 1 or magnitude == 0:
            return Scale(1.0, " s")
        if magnitude >= 1e-3:
            return Scale(1e-3, " ms")
        return Scale(1e-6, " µs")
    if key in ("bytes", "B"):
        power = 0
        while power < len(_BINARY) - 1 and magnitude >= 1024 ** (power + 1):
            power += 1
        return Scale(float(1024**power), f" {_BINARY[power]}")
    return Scale(1.0, f" {key}" if key else "")


def number(value: float, decimals: int | None = None) -> str:
    """``value`` with three significant digits (or ``decimals`` places), no exponent."""
    if not math.isfinite(value):
        return str(value)
    if decimals is None:
        if value == 0:
            return "0"
        decimals = min(9, max(0, 2 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_value(value: float | None, unit: str) -> str:
    """One value in its best scale: ``format_value(0.085, "s") == "85 ms"``; None is ``-``."""
    if value is None:
        return "-"
    return scale_for(unit, value).show(value)


def _nice_step(raw: float) -> float:
    power: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power


def ticks(low: float, high: float, unit: str, count: int = 5) -> list[tuple[float, str]]:
    """About ``count`` round ticks covering [low, high], with labels in one scale.

    The first tick is at or below ``low`` and the last at or above ``high``, so a
    chart that uses them as its range shows every point."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"ticks need finite bounds, got {low}, {high}")
    if high < low:
        low, high = high, low
    scale = scale_for(unit, max(abs(low), abs(high)))
    lo, hi = low / scale.divisor, high / scale.divisor
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    step = _nice_step((hi - lo) / max(1, count - 1))
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    decimals = next(d for d in range(12) if abs(step * 10**d - round(step * 10**d)) < 1e-6 * step * 10**d)
    result = []
    steps = round((last - first) / step)
    for index in range(steps + 1):
        shown = first + index * step
        result.append((shown * scale.divisor, scale.show(shown * scale.divisor, decimals)))
    return result
