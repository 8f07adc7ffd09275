"""The server target: ONNX with dynamic batch/sequence axes and ONNX Runtime's transformer fusions.

Steps: export (TorchScript exporter for encoders, whose graphs ONNX Runtime fuses fully into
``Attention``/``EmbedLayerNormalization``; the dynamo exporter for decoders and plain modules; each
falls back to the other), fuse with ``onnxruntime.transformers.optimizer`` where the family has a
fusion recipe, save (external data past ~1.8 GiB); :func:`~edgellm.export.export` validates it in ONNX
Runtime against torch. The variants are ``fused`` then ``plain``: a fused graph that fails parity is
dropped for the unfused one, and the manifest says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgellm.errors import ExportError, require
from edgellm.export.base import Exporter, SkipVariant, register_exporter
from edgellm.export.validate import max_positions
from edgellm.models.families import FAMILIES
from edgellm.runtime.artifact import model_fields

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
EXTERNAL_DATA_THRESHOLD = int(1.8 * (1 << 30))  # protobuf's hard limit is 2 GiB for the whole file


@dataclass
class OnnxOptions:
    """Options of the ONNX server exporter.

    Args:
        opset: ONNX opset for the TorchScript exporter (the dynamo exporter picks its own, >= 18).
        exporter: ``auto`` (TorchScript for encoders, dynamo otherwise, each falling back to the
            other), ``torchscript`` or ``dynamo``.
        optimize: apply ONNX Runtime's transformer fusions where the family has a recipe.
        external_data_threshold: weights larger than this many bytes go to ``model.onnx.data``.
        skip_layer_norm_fusion: fuse residual Add + LayerNorm into ``SkipLayerNormalization``.
    """

    opset: int = 17
    exporter: str = "auto"
    optimize: bool = True
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
    # ONNX Runtime's CPU SkipLayerNormalization kernel is 2.5x slower than Sum + LayerNormalization
    # (onnxruntime 1.32 on this project's x86 host: 0.95 ms vs 0.37 ms for an 8x128x384 tensor,
    # benchmarks/bench_layernorm_kernels.py), so residual adds are kept out of it unless asked for.
    skip_layer_norm_fusion: bool = False

    def __post_init__(self) -> None:
        if self.exporter not in ("auto", "torchscript", "dynamo"):
            raise ExportError(f"unknown exporter '{self.exporter}'", "use auto, torchscript or dynamo")
        if not 13 <= self.opset <= 23:
            raise ExportError(
                f"opset {self.opset} is out of range", "use an opset from 13 to 23 (default 17)"
            )


@register_exporter("onnx")
class OnnxServerExporter(Exporter):
    """Lower a model (fp32, or quantized by a :class:`~edgellm.compress.quant.QuantSpec`) to ONNX.

    Args:
        quant: a QuantSpec computed on ``model``; the artifact is then INT8 or INT4 and is checked
            against the torch fake-quantized model.
        accuracy_level: ``MatMulNBits`` compute precision for INT4 (0: fp32 activations, 4: int8).
        raw_cache: a folder that keeps the plain fp32 ONNX export of this model between calls
            (several compression tries of one model lower the same graph).
        **options: :class:`OnnxOptions` fields.
    """

    def __init__(
        self, quant: Any = None, accuracy_level: int = 0, raw_cache: str | Path | None = None, **options: Any
    ) -> None:
        self.options = OnnxOptions(**options)
        self.quant = quant
        self.accuracy_level = accuracy_level
        self.raw_cache = Path(raw_cache) if raw_cache is not None else None
        # INT4 as standard DequantizeLinear (int4, blocked, opset 21) + MatMul instead of MatMulNBits
        self.standard_int4 = False
        self._raw: tuple[Path, str, list[dict[str, str]], bool] | None = None

    def variants(self, model: Any) -> list[str]:
        family = FAMILIES.get(model.family)
        fusable = self.options.optimize and family is not None and family.ort_model_type
        return ["fused", "plain"] if fusable else ["plain"]

    def lower(self, model: Any, target: Any, workdir: Path, variant: str) -> dict[str, Any]:
        require("onnx", "onnx", "the ONNX exporter")
        require("onnxruntime", "onnx", "validating an ONNX export")
        import onnx

        opts, spec = self.options, self.quant
        raw, used, attempts, big = self._raw_export(model, workdir.parent)
        dst = workdir / MODEL_FILE
        for f in (dst, workdir / DATA_FILE):
            f.unlink(missing_ok=True)
        fusion, lowered = self._build(raw, dst, model, FAMILIES.get(model.family), variant, big)
        if variant == "fused" and not fusion["applied"]:
            raise SkipVariant(fusion.get("reason", "no fusion applied"))
        if model.tokenizer is not None and not (workdir / "tokenizer").is_dir():
            model.tokenizer.save_pretrained(workdir / "tokenizer")
        opset = next(
            (
                o.version
                for o in onnx.load(dst, load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            None,
        )
        precision = "fp32" if spec is None else f"int{spec.bits}"
        recipe: dict[str, Any] = {
            "stage": "export" if spec is None else "compress",
            "exporter": used,
            "export_attempts": attempts,
            "opset": opset,
            "options": asdict(opts),
            "fusion": fusion,
            "external_data": big,
        }
        if spec is not None:
            recipe["quantization"] = {
                "recipe": spec.recipe,
                "config": spec.config,
                "kept_fp32": spec.kept,
                "accuracy_level": self.accuracy_level,
                **lowered,
                "weight_bytes": spec.weight_bytes(),
            }
        return {
            "target": {"name": target.name, "runtime": "onnxruntime", "format": "onnx", "kind": target.kind},
            "precision": precision,
            "task": model.task,
            "model_file": MODEL_FILE,
            "model": model_fields(model),
            "outputs": [s.to_dict() for s in model.outputs],
            "calibration_dataset": (spec.calibration or None) if spec is not None else None,
            "recipe": recipe,
        }

    def runner(self, workdir: Path, fields: dict[str, Any], model: Any) -> Any:
        return onnx_runner(workdir / fields["model_file"], model)

    def describe(self, model: Any) -> str:
        return f"ONNX export of '{model.name}'"

    def parity_hint(self, model: Any) -> str:
        return "try --exporter torchscript/dynamo or --no-optimize, or loosen --atol/--min-cosine"

    def variant_info(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {"ops": fields["recipe"]["fusion"].get("ops", {})}

    def finish(
        self, model: Any, fields: dict[str, Any], runner: Any, variant: str, rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if variant == "plain" and rejected:
            fields["recipe"]["fusion"] = {"applied": False, "rejected": rejected}
        names = {s.name for s in runner.inputs}  # the graph may drop an input it never reads
        fields["inputs"] = [s.to_dict() for s in runner.inputs]
        fields["value_ranges"] = {k: v for k, v in model.int_high.items() if k in names}
        positions = max_positions(model)
        if positions < 1 << 30 and any("sequence" in s.shape for s in runner.inputs):
            fields["max_sequence"] = positions  # the longest request its position embeddings take
        return {}

    def _raw_export(self, model: Any, scratch: Path) -> tuple[Path, str, list[dict[str, str]], bool]:
        """The plain fp32 ONNX export, made once for all variants (and reused from ``raw_cache``)."""
        if self._raw is None:
            rawdir = Path(tempfile.mkdtemp(prefix=".raw-", dir=scratch))
            # this call's folder, then the shared one (both filled): compress()'s tries of a model that
            # another export already traced reuse that trace
            caches = [c for c in (self.raw_cache, _shared_cache(model, self.options)) if c is not None]
            hit = next((c for c in caches if (c / "export.json").is_file()), None)
            if hit is not None:
                for f in hit.iterdir():
                    shutil.copy2(f, rawdir)
                (rawdir / "export.json").unlink()
                used, attempts = json.loads((hit / "export.json").read_text())
            else:
                used, attempts = _export(model, rawdir / MODEL_FILE, self.options)
            for cache in caches:
                if not (cache / "export.json").is_file():
                    cache.mkdir(parents=True, exist_ok=True)
                    for f in rawdir.iterdir():
                        shutil.copy2(f, cache)
                    (cache / "export.json").write_text(json.dumps([used, attempts]))
            big = sum(f.stat().st_size for f in rawdir.iterdir()) > self.options.external_data_threshold
            self._raw = (rawdir, used, attempts, big)
        rawdir, used, attempts, big = self._raw
        return rawdir / MODEL_FILE, used, attempts, big

    def close(self) -> None:
        if self._raw is not None:
            shutil.rmtree(self._raw[0], ignore_errors=True)
            self._raw = None

    def _build(self, raw: Path, dst: Path, model: Any, family: Any, variant: str, big: bool):
        """Fuse (``fused``) or not (``plain``), lower the QuantSpec if any, save to ``dst``."""
        import onnx

        spec = self.quant
        fusion: dict[str, Any] = {"applied": False}
        proto = None
        if variant == "fused":
            # QDQ and MatMulNBits lower per linear layer, so only all-dynamic specs keep fused attention
            attention = spec is None or all(lq.dynamic_activation for lq in spec.layers.values())
            fusion, proto = _fuse(
                raw,
                model,
                family.ort_model_type,
                attention=attention,
                skip_layer_norm=self.options.skip_layer_norm_fusion,
            )
            if proto is None:
                return fusion, {}
        if proto is None:
            proto = onnx.load(str(raw))
        if not self.options.skip_layer_norm_fusion:
            fusion["residual_sums"] = _residual_sums(proto)
        lowered: dict[str, Any] = {}
        if spec is not None:
            from edgellm.export.onnx_quant import lower_quant

            if self.standard_int4 and any(lq.bits == 4 for lq in spec.layers.values()):
                from onnx import version_converter

                proto = version_converter.convert_version(proto, 21)  # blocked DequantizeLinear
            lowered = lower_quant(
                proto, spec, model, accuracy_level=self.accuracy_level, standard_int4=self.standard_int4
            )
        _save_proto(proto, dst, big)
        return fusion, lowered


class OnnxBased(Exporter):
    """An exporter that lowers through :class:`OnnxServerExporter` (``self.onnx``) and converts what it
    wrote: the variants, what a rejected one records, the manifest's completion and the clean-up are the
    ONNX exporter's."""

    onnx: OnnxServerExporter

    def variants(self, model: Any) -> list[str]:
        return self.onnx.variants(model)

    def variant_info(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self.onnx.variant_info(fields)

    def finish(
        self, model: Any, fields: dict[str, Any], runner: Any, variant: str, rejected: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return self.onnx.finish(model, fields, runner, variant, rejected)

    def close(self) -> None:
        self.onnx.close()

    @contextlib.contextmanager
    def lowered_onnx(
        self, model: Any, target: Any, workdir: Path, variant: str
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Lower ``variant`` to ONNX in a scratch folder beside ``workdir`` and yield ``(folder, fields)``
        for the caller to convert into ``workdir``; the tokenizer is copied over after, the rest removed."""
        with tempfile.TemporaryDirectory(prefix=".onnx-", dir=workdir.parent) as tmp:
            tmpdir = Path(tmp)
            yield tmpdir, self.onnx.lower(model, target, tmpdir, variant)
            if (tmpdir / "tokenizer").is_dir() and not (workdir / "tokenizer").is_dir():
                shutil.copytree(tmpdir / "tokenizer", workdir / "tokenizer")


# A folder that keeps plain fp32 ONNX exports between processes, keyed by the model's weights, class,
# config, specs and the export options (raw_key): repeated exports of one model (compression tries, a
# test suite) trace it once. Off unless set.
EXPORT_CACHE_ENV = "EDGELLM_EXPORT_CACHE"


def _shared_cache(model: Any, opts: OnnxOptions) -> Path | None:
    """The model's folder in ``$EDGELLM_EXPORT_CACHE``, or None when it is not set."""
    root = os.environ.get(EXPORT_CACHE_ENV)
    return Path(root) / raw_key(model, opts) if root else None


def raw_key(model: Any, opts: OnnxOptions) -> str:
    """What a plain export depends on, hashed: the model (:func:`model_key`) and the options."""
    return model_key(model, "onnx", json.dumps(asdict(opts), sort_keys=True))


def model_key(model: Any, *parts: str) -> str:
    """The module's class and every state-dict tensor (name, dtype, shape, bytes), the model's task,
    family, config and input/output specs, and ``parts`` (what else a conversion depends on), hashed.
    Not its name, which no converted file carries: a model saved and loaded again under another name
    converts the same."""
    import hashlib

    import torch

    mod = model.module
    h = hashlib.sha256()
    head = [f"{type(mod).__module__}.{type(mod).__qualname__}", model.task, model.family, *parts]
    h.update(json.dumps(head, default=str).encode())
    specs = [s.to_dict() for s in list(model.inputs) + list(model.outputs)]
    h.update(json.dumps(specs, sort_keys=True, default=str).encode())
    cfg = getattr(model, "config", None)
    if hasattr(cfg, "to_json_string"):
        h.update(cfg.to_json_string().encode())
    for name, t in mod.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def onnx_runner(path: Path, model: Any) -> Any:
    """An ONNX Runtime runner over ``path`` with the model's input/output specs (inputs the graph dropped
    left out)."""
    from edgellm.runtime.ort_runner import OrtRunner

    runner = OrtRunner(path)
    present = {i.name for i in runner.inputs}
    runner.inputs = [s for s in model.inputs if s.name in present]
    runner.outputs = model.outputs
    return runner


def _export(model: Any, raw: Path, opts: OnnxOptions) -> tuple[str, list[dict[str, str]]]:
    family = FAMILIES.get(model.family)
    if opts.exporter != "auto":
        order = [opts.exporter]
    elif family is not None and family.kind == "encoder":
        order = ["torchscript", "dynamo"]
    else:
        order = ["dynamo", "torchscript"]
    attempts: list[dict[str, str]] = []
    for name in order:
        for f in raw.parent.iterdir():
            f.unlink()
        try:
            with _quiet():
                (_torchscript if name == "torchscript" else _dynamo)(model, raw, opts)
            return name, attempts
        except Exception as exc:  # exporters raise many kinds; keep the reason, try the next
            attempts.append(
                {"exporter": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            )
    detail = "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts)
    raise ExportError(
        f"could not export '{model.name}' to ONNX ({detail})",
        "check that the model runs in torch on its example inputs; try --exporter dynamo or torchscript",
    )


def _quiet():
    """Silence exporter chatter (tracer warnings, torchvision notices, progress prints)."""
    from edgellm.utils.quiet import quiet

    return quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")


def _example_args(model: Any) -> tuple[Any, ...]:
    import torch

    feeds = model.example_inputs(batch=2, seq=8, seed=0)
    return tuple(torch.as_tensor(feeds[s.name]) for s in model.inputs)


def _torchscript(model: Any, raw: Path, opts: OnnxOptions) -> None:
    import torch

    axes = {s.name: s.dynamic_axes for s in [*model.inputs, *model.outputs] if s.dynamic_axes}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            model.module,
            _example_args(model),
            str(raw),
            input_names=[s.name for s in model.inputs],
            output_names=[s.name for s in model.outputs],
            dynamic_axes=axes,
            opset_version=opts.opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _dynamo(model: Any, raw: Path, opts: OnnxOptions) -> None:
    import torch

    limit = max_positions(model, default=1 << 20)
    dims: dict[str, Any] = {}

    def dim(name: str) -> Any:
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=1, max=limit if name == "sequence" else 1 << 20)
        return dims[name]

    shapes = tuple({i: dim(n) for i, n in s.dynamic_axes.items()} or None for s in model.inputs)
    with torch.no_grad():
        torch.onnx.export(
            model.module,
            _example_args(model),
            str(raw),
            input_names=[s.name for s in model.inputs],
            output_names=[s.name for s in model.outputs],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=True,
            verbose=False,
        )


def _fuse(
    raw: Path, model: Any, ort_type: str, *, attention: bool = True, skip_layer_norm: bool = False
) -> tuple[dict[str, Any], Any]:
    """ONNX Runtime's transformer optimizer (graph fusions only, opt_level 0: portable across EPs).

    Returns the fusion record and the fused ModelProto (None when the optimizer failed).
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    cfg = model.config
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 0)
    options = FusionOptions(ort_type)
    options.enable_attention = attention
    options.enable_skip_layer_norm = skip_layer_norm
    try:
        with _quiet():
            opt = optimizer.optimize_model(
                str(raw),
                model_type=ort_type,
                num_heads=heads,
                hidden_size=hidden,
                opt_level=0,
                optimization_options=options,
            )
            ops = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    except Exception as exc:  # a fusion pass that cannot handle a graph is skipped, not fatal
        return {"applied": False, "reason": f"optimizer failed: {type(exc).__name__}: {str(exc)[:200]}"}, None
    record = {
        "applied": bool(ops),
        "ops": ops,
        "model_type": ort_type,
        "attention": attention,
        "skip_layer_norm": skip_layer_norm,
    }
    return record, opt.model


def _residual_sums(proto: Any) -> int:
    """Write residual adds that feed a LayerNorm as ``Sum``: ONNX Runtime fuses ``Add`` + LayerNorm into
    its slower ``SkipLayerNormalization`` at load time, but leaves ``Sum`` alone. Returns the count."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    n_done = 0
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization"):
            p = producer.get(node.input[0])
            if p is not None and p.op_type == "Add" and p.domain in ("", "ai.onnx"):
                p.op_type = "Sum"
                n_done += 1
    return n_done


def _save_proto(proto: Any, dst: Path, big: bool) -> None:
    import onnx

    if big:
        onnx.save_model(
            proto,
            str(dst),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=DATA_FILE,
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(dst))
