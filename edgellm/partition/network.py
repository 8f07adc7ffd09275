"""The link between phone and server, and the parsers of the sizes, rates and times users write.

Example:
    >>> Network.parse("10mbit", "50ms") == Network.named("4g")
    True
    >>> Network.parse("10mbit", "50ms", down="50mbit").send_ms(125_000)   # 1 Mbit up at 10 Mbit/s
    100.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgellm.errors import EdgeLLMError

_UNITS_BIT = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_UNITS_BYTE = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse(text: str, units: dict[str, float], what: str, example: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)\s*", str(text))
    if not m or m.group(2).lower() not in units:
        raise EdgeLLMError(
            f"cannot read {what} '{text}'", f"write it like {example} (units: {', '.join(units)})"
        )
    return float(m.group(1)) * units[m.group(2).lower()]


def parse_bandwidth(text: str) -> float:
    """``10mbit`` -> bits per second."""
    return _parse(text, _UNITS_BIT, "bandwidth", "10mbit")


def parse_duration(text: str) -> float:
    """``50ms`` -> milliseconds."""
    return _parse(text, _UNITS_TIME, "duration", "50ms")


def parse_size(text: str) -> float:
    """``512MB`` -> bytes."""
    return _parse(text, _UNITS_BYTE, "size", "512MB")


@dataclass(frozen=True)
class Network:
    """The link between phone and server: bandwidth up and down (bit/s) and round-trip time (ms)."""

    up_bps: float
    down_bps: float
    rtt_ms: float

    @classmethod
    def parse(cls, bandwidth: str, rtt: str, down: str | None = None) -> Network:
        """From the CLI's strings: ``Network.parse("10mbit", "50ms")``; ``down`` defaults to the uplink."""
        up = parse_bandwidth(bandwidth)
        return cls(up, parse_bandwidth(down) if down else up, parse_duration(rtt))

    @classmethod
    def named(cls, name: str) -> Network:
        """A named profile of :data:`NETWORKS`: ``Network.named("4g")``."""
        if name not in NETWORKS:
            raise EdgeLLMError(
                f"unknown network profile '{name}'",
                f"use one of {', '.join(NETWORKS)}, or Network.parse(bandwidth, rtt)",
            )
        return cls.parse(*NETWORKS[name])

    def send_ms(self, nbytes: float, up: bool = True) -> float:
        """Milliseconds to send ``nbytes`` up (phone to server) or down."""
        return nbytes * 8.0 / (self.up_bps if up else self.down_bps) * 1000.0


# the network profiles the split benchmarks emulate: name -> (bandwidth both ways, round-trip time)
NETWORKS = {
    "3g": ("1mbit", "100ms"),
    "4g": ("10mbit", "50ms"),
    "wifi": ("50mbit", "10ms"),
}
