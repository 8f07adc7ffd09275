"""The roofline shared by bench --estimate and the partition cost model, and this host's CPU facts."""

import pytest

from edgellm.targets import COMPUTE_EFFICIENCY, MEMORY_EFFICIENCY, load_target, peak_tops, roofline
from edgellm.targets.host import cpu_flags, cpu_model, host_peak_gflops


def test_roofline_is_the_larger_of_the_two_bounds():
    phone = load_target("snapdragon-865")
    compute = roofline(phone, "fp32", flops=1e12, nbytes=1.0)
    assert compute.bound == "compute"
    assert compute.seconds == pytest.approx(
        1e12 / (phone.peak_compute_tops["fp32"] * 1e12 * COMPUTE_EFFICIENCY)
    )
    memory = roofline(phone, "fp32", flops=1.0, nbytes=1e9)
    assert memory.bound == "memory"
    assert memory.ms == pytest.approx(1e9 / (phone.memory_bandwidth_gbs * 1e9 * MEMORY_EFFICIENCY) * 1000)
    # int8 runs at the int8 peak; a calibrated efficiency replaces the default
    assert roofline(phone, "int8", 1e12, 1.0).seconds < compute.seconds
    assert roofline(phone, "fp32", 1e12, 1.0, compute_efficiency=0.6).seconds == pytest.approx(
        compute.seconds / 2
    )


def test_a_precision_without_a_peak_runs_at_fp32_speed():
    server = load_target("x86-server")
    assert "fp16" not in server.peak_compute_tops
    assert peak_tops(server, "fp16") == ("fp32", server.peak_compute_tops["fp32"])
    assert peak_tops(server, "int8") == ("int8", server.peak_compute_tops["int8"])


def test_host_facts():
    assert isinstance(cpu_flags(), set) and cpu_model()
    assert host_peak_gflops() > 0
