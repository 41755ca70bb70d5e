"""Link impairments with netlab's `tc` names: `delay`, `jitter`, `loss`, `rate`, `corrupt`, `duplicate`, `reorder`.

One parser for both ways they arrive: keys of a link (both ends) or of a link
endpoint in the topology file, and the options of `labkit netem`. A value is a
bare number in netlab's units (delay and jitter in ms, percentages in %, rate in
kbit/s) or a string with its unit (`50ms`, `1.5s`, `1%`, `512kbit`, `10mbit`,
`1gbit`). It lives in the plan layer so `labkit validate` checks it without
touching a kernel; labkit.impair puts it into one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

FIELDS = ("delay", "jitter", "loss", "rate", "corrupt", "duplicate", "reorder")
# What only the netem qdisc (kernel module sch_netem) can do; rate is tbf's and loss nftables' everywhere.
NETEM_FIELDS = ("delay", "jitter", "corrupt", "duplicate", "reorder")
PERCENT_FIELDS = ("loss", "corrupt", "duplicate", "reorder")
MAX_DELAY_MS = 60_000.0
MIN_RATE_KBIT, MAX_RATE_KBIT = 8, 100_000_000  # 8 kbit/s .. 100 gbit/s

_NUMBER = r"(\d+(?:\.\d+)?)"
_TIME = re.compile(rf"^{_NUMBER}\s*(us|ms|s)?$")
_PERCENT = re.compile(rf"^{_NUMBER}\s*%?$")
_RATE = re.compile(rf"^{_NUMBER}\s*(kbit|mbit|gbit)?$", re.IGNORECASE)
_TIME_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}
_RATE_SCALE = {"kbit": 1, "mbit": 1000, "gbit": 1_000_000, None: 1}


def _number(value: object, what: str) -> float | str:
    """A bare YAML number as a float; a string as itself; anything else refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} should be a number or a string with a unit (got {value!r})")
    if isinstance(value, str):
        if len(value) > 32:
            raise ValueError(f"{what} {value[:32]!r}... is too long")
        return value.strip()
    if not math.isfinite(value):
        raise ValueError(f"{what} should be a finite number (got {value!r})")
    return float(value)


def parse_time(value: object, what: str = "delay") -> float:
    """Milliseconds: 50 (ms, netlab's unit), '50ms', '1.5s', '500us'; 0 to 60 s."""
    raw = _number(value, what)
    if isinstance(raw, str):
        match = _TIME.match(raw)
        if not match:
            raise ValueError(f"{what} {raw!r} is not a time: give milliseconds (50) or a unit: 50ms, 1.5s, 500us")
        raw = float(match.group(1)) * _TIME_SCALE[match.group(2)]
    if not 0 <= raw <= MAX_DELAY_MS:
        raise ValueError(f"{what} {value!r} is out of range: 0 to 60s")
    return round(raw, 3)


def parse_percent(value: object, what: str = "loss") -> float:
    """A percentage: 1, 0.5, '1%', '0.25%'; 0 to 100, in steps of 0.01."""
    raw = _number(value, what)
    if isinstance(raw, str):
        match = _PERCENT.match(raw)
        if not match:
            raise ValueError(f"{what} {raw!r} is not a percentage: give 1, 0.5 or '1%'")
        raw = float(match.group(1))
    if not 0 <= raw <= 100:
        raise ValueError(f"{what} {value!r} is out of range: 0 to 100 (%)")
    return round(raw, 2)


def parse_rate(value: object, what: str = "rate") -> int:
    """kbit/s: 512 (kbit/s, netlab's unit), '512kbit', '10mbit', '1gbit'; 8 kbit/s to 100 gbit/s."""
    raw = _number(value, what)
    if isinstance(raw, str):
        match = _RATE.match(raw)
        if not match:
            hint = " ('kbps' is kilobytes/s to tc: write kbit or mbit)" if "bps" in raw.lower() else ""
            raise ValueError(f"{what} {raw!r} is not a rate: give kbit/s (512) or a unit: 512kbit, 10mbit, 1gbit"
                             + hint)
        raw = float(match.group(1)) * _RATE_SCALE[(match.group(2) or "").lower() or None]
    kbit = round(raw)
    if not MIN_RATE_KBIT <= kbit <= MAX_RATE_KBIT:
        raise ValueError(f"{what} {value!r} is out of range: 8kbit to 100gbit")
    return kbit


PARSERS = {"delay": parse_time, "jitter": parse_time, "rate": parse_rate,
           **{name: parse_percent for name in PERCENT_FIELDS}}


def parse(name: str, value: object) -> float | int:
    return PARSERS[name](value, name)


@dataclass(frozen=True)
class Impairment:
    """What one interface's egress suffers. None: not impaired that way."""

    delay: float | None = None      # ms
    jitter: float | None = None     # ms
    loss: float | None = None       # %
    rate: int | None = None         # kbit/s
    corrupt: float | None = None    # %
    duplicate: float | None = None  # %
    reorder: float | None = None    # %

    @classmethod
    def from_values(cls, values: dict[str, object]) -> Impairment:
        """Parse each given value (ValueError names the first bad one); zeros mean 'not impaired that way'."""
        parsed = {name: parse(name, value) for name, value in values.items() if value is not None}
        return cls(**{name: value for name, value in parsed.items() if value})

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def merged(self, override: Impairment) -> Impairment:
        """These values, with `override`'s where it has them (an endpoint's over its link's)."""
        return Impairment(**{f.name: getattr(override, f.name) if getattr(override, f.name) is not None
                             else getattr(self, f.name) for f in fields(self)})

    def problems(self) -> list[str]:
        """What the values cannot mean together."""
        found = []
        if self.jitter is not None and self.delay is None:
            found.append("jitter varies a delay: give delay too")
        if self.reorder is not None and self.delay is None:
            found.append("reorder sends some packets ahead of delayed ones: give delay too")
        return found

    def netem_needs(self) -> list[str]:
        """The keys set here that only the netem qdisc can do."""
        return [name for name in NETEM_FIELDS if getattr(self, name) is not None]

    def as_dict(self) -> dict[str, float | int]:
        """The keys set, in netlab's units (ms, %, kbit/s): status and `netem show` print these."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def describe(self) -> str:
        """`delay 50ms jitter 5ms loss 1% rate 10mbit`, as tc would say it."""
        parts = []
        for name, value in self.as_dict().items():
            if name in ("delay", "jitter"):
                parts.append(f"{name} {value:g}ms")
            elif name == "rate":
                parts.append(f"rate {format_rate(int(value))}")
            else:
                parts.append(f"{name} {value:g}%")
        return " ".join(parts) or "none"


def format_rate(kbit: int) -> str:
    for unit, scale in (("gbit", 1_000_000), ("mbit", 1000)):
        if kbit >= scale and kbit % scale == 0:
            return f"{kbit // scale}{unit}"
    return f"{kbit}kbit"
