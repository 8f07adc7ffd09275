"""The link between phone and server: the parsers of what users write, and the named profiles."""

import pytest

from edgellm.errors import EdgeLLMError
from edgellm.partition import NETWORKS, Network
from edgellm.partition.network import parse_bandwidth, parse_duration, parse_size


def test_units():
    assert parse_bandwidth("10mbit") == 10e6 and parse_bandwidth("1.5Gbit") == 1.5e9
    assert parse_duration("50ms") == 50 and parse_duration("0.1s") == 100
    assert parse_size("512MB") == 512e6 and parse_size("1GiB") == 2**30
    with pytest.raises(EdgeLLMError, match="10mbit"):
        parse_bandwidth("fast")


def test_network_from_strings_and_named_profiles():
    net = Network.parse("10mbit", "50ms", down="50mbit")
    assert (net.up_bps, net.down_bps, net.rtt_ms) == (10e6, 50e6, 50.0)
    assert net.send_ms(125_000) == pytest.approx(100.0) and net.send_ms(125_000, up=False) == pytest.approx(
        20.0
    )
    assert Network.named("4g") == Network.parse("10mbit", "50ms")
    assert {"3g", "4g", "wifi"} <= set(NETWORKS)
    assert Network.named("3g").up_bps < Network.named("4g").up_bps < Network.named("wifi").up_bps
    with pytest.raises(EdgeLLMError, match="3g, 4g, wifi"):
        Network.named("5g")
