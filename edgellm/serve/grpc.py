"""KServe v2 over gRPC (``inference.GRPCInferenceService``, tritonclient's stubs) on the same models,
batchers and canary routing as REST; a refusal aborts the call with the status code matching its HTTP one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgellm._version import __version__
from edgellm.partition.wire import V2_TO_NP
from edgellm.serve.auth import bearer_ok
from edgellm.serve.protocol import EXTENSIONS, ProtocolError, decode_tensor, v2_datatype, validate

log = logging.getLogger("edgellm.serve")


async def start_grpc(server: Any) -> Any:
    """Bind the gRPC listener of ``server`` (``config.grpc_port``; 0 writes back the port bound)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    cfg = server.config
    g = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", int(cfg.max_body_mb * 2**20)),
            ("grpc.max_send_message_length", int(cfg.max_body_mb * 2**20)),
            ("grpc.so_reuseport", 0),  # a port another server holds is an error, not a silent share
        ]
    )
    service = type("GrpcService", (_GrpcService, service_pb2_grpc.GRPCInferenceServiceServicer), {})
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service(server), g)
    cfg.grpc_port = g.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
    await g.start()
    return g


def _grpc_status(status: int):
    import grpc

    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
        422: grpc.StatusCode.INVALID_ARGUMENT,
        503: grpc.StatusCode.UNAVAILABLE,
        504: grpc.StatusCode.DEADLINE_EXCEEDED,
    }.get(status, grpc.StatusCode.INTERNAL)


class _GrpcService:
    """``inference.GRPCInferenceService`` on the same models and batchers as REST."""

    def __init__(self, server: Any) -> None:
        self.s = server

    async def _check(self, context) -> None:
        import grpc

        key = self.s.config.api_key
        if key:
            md = dict(context.invocation_metadata() or ())
            if not bearer_ok(md.get("authorization", ""), key):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    async def ServerLive(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        return pb.ServerLiveResponse(live=self.s.live)

    async def ServerReady(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        return pb.ServerReadyResponse(ready=self.s.ready)

    async def ModelReady(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        m = self.s.models.get(request.name)
        return pb.ModelReadyResponse(ready=bool(m and m.ready and not self.s.draining))

    async def ServerMetadata(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        return pb.ServerMetadataResponse(name="edgellm", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        try:
            m = self.s.model(request.name, request.version)
        except ProtocolError as exc:
            await context.abort(_grpc_status(exc.status), str(exc))
        md = m.metadata()
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=md["name"],
            versions=md["versions"],
            platform=md["platform"],
            inputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in md["inputs"]],
            outputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in md["outputs"]],
        )

    async def ModelInfer(self, request, context):
        from tritonclient.grpc import service_pb2 as pb

        await self._check(context)
        try:
            m = self.s.model(request.model_name, request.model_version)
            if not m.ready:
                raise ProtocolError(f"model '{m.name}' is not ready yet", 503)
            feeds, params = decode_inputs(request)
            names = [o.name for o in m.outputs]
            unknown = [o.name for o in request.outputs if o.name not in names]
            if unknown:
                raise ProtocolError(f"unknown output '{unknown[0]}'; the model has {', '.join(names)}")
            try:
                feeds = validate(feeds, m.inputs, params, m.bounds)
            except ProtocolError:
                self.s.metrics.request(m.name, m.version, False, 0.0, "invalid")
                raise
            out, m = await self.s.route(m, feeds, pinned=bool(request.model_version))
        except ProtocolError as exc:
            code = _overload() if "overloaded" in str(exc) else _grpc_status(exc.status)
            await context.abort(code, str(exc))
        except Exception as exc:  # a bug: still a status with the reason (and a traceback in the log)
            log.exception("ModelInfer failed")
            await context.abort(
                _grpc_status(500), f"internal error: {type(exc).__name__}: {exc} (please report it)"
            )
        wanted = [o.name for o in request.outputs] or [o.name for o in m.outputs]
        resp = pb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request.id)
        for n in wanted:
            arr = np.ascontiguousarray(out[n])
            resp.outputs.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=n, datatype=v2_datatype(arr.dtype), shape=list(arr.shape)
                )
            )
            resp.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return resp


def decode_inputs(request) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The tensors and parameters of a ``ModelInferRequest``, each checked as REST's are (:func:`decode_tensor`):
    values in their datatype's contents field, or one raw blob per input."""
    feeds: dict[str, np.ndarray] = {}
    params: dict[str, dict] = {}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    for i, t in enumerate(request.inputs):
        if not t.name:
            raise ProtocolError(f"inputs[{i}] has no name")
        if t.name in feeds:
            raise ProtocolError(f"input '{t.name}' is given twice")
        contents = _contents(t)
        if raw and contents is not None:
            raise ProtocolError(
                f"input '{t.name}' has both contents and raw_input_contents; send one of them"
            )
        if raw:
            arr = decode_tensor(t.name, t.datatype, list(t.shape), raw=raw[i])
        else:
            arr = decode_tensor(t.name, t.datatype, list(t.shape), data=contents)
        feeds[t.name] = arr
        params[t.name] = {k: _param(v) for k, v in t.parameters.items()}
    return feeds, params


def _overload():
    import grpc

    return grpc.StatusCode.RESOURCE_EXHAUSTED


def _param(v) -> Any:
    which = v.WhichOneof("parameter_choice")
    return getattr(v, which) if which else None


# the one ``InferTensorContents`` field each datatype's values go in (FP16 and BF16 travel as raw bytes only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _contents(t) -> list | None:
    """The values of ``t`` from the contents field of its datatype; None when it has no contents at all.
    Values in another type's field (``fp32_contents`` for an INT64 input) are refused, not converted."""
    c = t.contents
    given = [f.name for f, _ in c.ListFields()]
    if not given:
        return None
    want = CONTENTS_FIELD.get(t.datatype)
    if want is None and t.datatype in V2_TO_NP:
        raise ProtocolError(
            f"input '{t.name}': {t.datatype} values cannot travel in contents (send them as raw_input_contents)"
        )
    if want is None:
        raise ProtocolError(
            f"input '{t.name}': datatype {t.datatype!r} is not supported (use one of {', '.join(V2_TO_NP)})"
        )
    wrong = [f for f in given if f != want]
    if wrong:
        raise ProtocolError(
            f"input '{t.name}' is {t.datatype} but its values are in {wrong[0]}; put them in {want}"
        )
    return list(getattr(c, want))
