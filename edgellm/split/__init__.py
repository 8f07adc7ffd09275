"""The phone half of a split model: run the device artifact, encode the activation, call the server.

:class:`~edgellm.split.client.SplitClient` does one call with its time breakdown;
:func:`~edgellm.split.bench.bench_split` repeats it; :mod:`~edgellm.split.netem` emulates phone/server
networks and a slower phone CPU on one Linux host (used by ``benchmarks/split_netem.py``).
"""
