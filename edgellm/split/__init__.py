"""The phone half of a split model: run the device artifact, encode the activation, call the server.

:class:`~edgellm.split.client.SplitClient` does one call with its time breakdown;
:func:`~edgellm.split.bench.bench_split` repeats it. For decoders,
:class:`~edgellm.split.generation_client.GenerationClient` generates through a server session, the
phone half stepping its own cache (:class:`~edgellm.split.stepper.DeviceStepper`). Phone/server
networks are emulated by :mod:`edgellm.bench.netem` (used by ``benchmarks/split_netem.py``).
"""
