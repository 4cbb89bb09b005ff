"""Valid ranges of numbers a user hands in: method hyperparameters and command-line options.

A method declares a :class:`Limit` per hyperparameter in its ``limits`` (merged along its class
hierarchy, so every trajectory method gets the ones :class:`~mddbench.trajectory.matching.TrajectoryMatching`
declares); :meth:`mddbench.Method.resolve` checks every resolved value against them before any work.
Command-line options get the same limits as argparse types (:func:`option`). Every number must be
finite (NaN and infinity are never a setting).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable

from mddbench.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:,.0f}{')' if self.high_open else ']'}" \
                if self.high >= 1e6 else \
                f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"


# Nothing mddbench counts or weighs goes past a billion: a larger value is a typo (an extra digit, an
# exponent) that would run until killed, so it is refused like a negative one.
LARGEST = 1e9
ANY = Limit()
AT_LEAST_1 = Limit(1, LARGEST)  # counts: iterations, steps, epochs, batch sizes, models
NON_NEGATIVE = Limit(0, LARGEST)  # 0 is a setting: a frozen learning rate, a loss weight switched off, "all"
POSITIVE = Limit(0, low_open=True)  # step sizes that must move, temperatures, seconds
FRACTION = Limit(0, 1)  # probabilities, decays
MOMENTUM = Limit(0, 1, high_open=True)  # 1 would never forget a gradient


def numbers(value: Any) -> list[float]:
    """The numbers in a setting (a list setting is checked element-wise); booleans are not numbers."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in numbers(v)]
    return []


def check(name: str, value: Any, limit: Limit = ANY) -> None:
    """Raise ConfigError unless every number in ``value`` is finite and within ``limit``."""
    bad = [v for v in numbers(value) if not limit.admits(v)]
    if bad:
        finite = "" if all(math.isfinite(v) for v in bad) else "a finite number" + ("" if limit is ANY else " ")
        raise ConfigError(f"{name} must be {finite}{'' if limit is ANY else limit}, got {value!r}")


def option(kind: Callable[[str], Any], limit: Limit) -> Callable[[str], Any]:
    """An argparse ``type``: parse with ``kind`` and refuse values outside ``limit`` at parse time."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number{'' if limit is ANY else ' ' + str(limit)} "
                                             f"(NaN and infinity are never a setting; leave the option out for "
                                             f"its default), got {text}")
        if not limit.admits(value):
            raise argparse.ArgumentTypeError(f"must be {limit}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse
