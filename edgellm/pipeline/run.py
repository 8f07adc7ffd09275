"""``edgellm run recipe.yaml``: data -> train -> compress -> partition -> export -> bench -> split check -> report.

Each stage has a key: the SHA-256 of its own section of the recipe, the content hashes of what it reads
(the dataset version, the source model's files, the keys of the stages it depends on) and the edgellm
version. A finished stage records its key and its result in ``OUTPUT/.edgellm-run/state.json`` (written
atomically after every stage); on a re-run, a stage whose key is unchanged and whose outputs still exist is
skipped, so editing one section re-runs that stage and what depends on it, and a run that was interrupted
resumes at the first stage that had not finished (training resumes from its last checkpoint).

Every artifact a run exports records its lineage in its manifest: the recipe (path and hash), the dataset
version and the source model (name and hash).

Example:
    >>> from edgellm.pipeline import run_recipe
    >>> result = run_recipe("recipes/demo.yaml")   # doctest: +SKIP
    >>> result["report"]                           # doctest: +SKIP
    'edgellm-out/report.md'
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgellm._version import __version__
from edgellm.errors import EdgeLLMError
from edgellm.pipeline.fingerprint import digest, source_fingerprint
from edgellm.pipeline.recipe import CompressItem, Recipe
from edgellm.utils.fs import atomic_write_text

STATE_DIR = ".edgellm-run"


class Pipeline:
    """One run of a recipe. ``force`` re-runs every stage; ``log`` receives one line per event."""

    def __init__(
        self,
        recipe: Recipe,
        recipe_path: str | Path | None = None,
        *,
        output: str | Path | None = None,
        force: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.recipe_path = Path(recipe_path).resolve() if recipe_path else None
        self.base = self.recipe_path.parent if self.recipe_path else Path.cwd()
        self.out = Path(output if output is not None else recipe.output)
        self.force = force
        self.say = log or (lambda _m: None)
        self.state_path = self.out / STATE_DIR / "state.json"
        self.state: dict[str, Any] = {} if force else self._read_state()
        self.results: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.timings: list[dict[str, Any]] = []
        self._adapters: dict[str, Any] = {}
        raw = recipe.model_dump(mode="json")
        self.recipe_hash = digest(raw)
        self.lineage_base = {
            "recipe": {
                "name": recipe.name,
                "path": str(self.recipe_path) if self.recipe_path else None,
                "sha256": self.recipe_hash,
            },
            "edgellm_version": __version__,
        }

    # -- state ---------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {}
        try:
            return json.loads(self.state_path.read_text())["stages"]
        except (ValueError, KeyError):
            return {}  # a damaged state file: everything re-runs, nothing is lost

    def _write_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.state_path,
            json.dumps({"recipe": self.lineage_base["recipe"], "stages": self.state}, indent=2, default=str)
            + "\n",
        )

    def _stage(
        self, name: str, key_parts: dict[str, Any], fn: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        key = digest({"stage": name, "edgellm": __version__, **key_parts})
        self.keys[name] = key
        prev = self.state.get(name)
        if (
            prev is not None
            and prev.get("key") == key
            and all(Path(p).exists() for p in prev.get("outputs", []))
        ):
            self.say(f"[{name}] unchanged, skipped")
            self.results[name] = prev["result"]
            self.timings.append(
                {"stage": name, "status": "skipped", "seconds": 0.0, "ran_s": prev.get("seconds", 0.0)}
            )
            return prev["result"]
        self.say(f"[{name}] running")
        t0 = time.perf_counter()
        result = fn()
        seconds = round(time.perf_counter() - t0, 1)
        outputs = result.pop("_outputs", [])
        self.state[name] = {"key": key, "result": result, "outputs": outputs, "seconds": seconds}
        self._write_state()
        self.results[name] = result
        self.timings.append({"stage": name, "status": "ran", "seconds": seconds})
        self.say(f"[{name}] done in {seconds:.1f} s")
        return result

    # -- models and data -----------------------------------------------------------------------------
    def path(self, p: str) -> Path:
        """A recipe path: absolute, or relative to the output folder."""
        q = Path(p)
        return q if q.is_absolute() else self.out / q

    def model_ref(self, ref: str) -> str:
        if ref in ("train", "pruned"):
            return str(Path(self.results["train" if ref == "train" else "prune"]["model"]))
        q = Path(ref)
        if not q.is_absolute() and (self.base / q).exists() and not Path(ref).exists():
            return str(self.base / q)
        return ref

    def adapter(self, ref: str) -> Any:
        from edgellm.models import load

        real = self.model_ref(ref)
        if real not in self._adapters:
            name = {"train": self._trained_name, "pruned": self._pruned_name}.get(ref)
            self._adapters[real] = load(real, name=name() if name else None)
        return self._adapters[real]

    def _trained_name(self) -> str:
        t = self.recipe.train
        assert t is not None
        return t.scratch.name if t.scratch is not None else f"{Path(str(t.model)).name}-trained"

    def _pruned_name(self) -> str:
        p = self.recipe.prune
        assert p is not None
        return f"{self.adapter(p.model).name}-pruned"

    def model_key(self, ref: str) -> dict[str, Any]:
        a = self.adapter(ref)
        return {"name": a.name, "sha256": a.source.get("sha256")}

    def dataset(self) -> str | None:
        """The data section's dataset version as ``STORE@COMMIT`` (None without a data section)."""
        return self.results["data"]["ref"] if "data" in self.results else None

    def lineage(self, model_ref: str | None) -> Any:
        from edgellm.export.base import lineage

        info = dict(self.lineage_base)
        info["dataset"] = self.results["data"]["version"] if "data" in self.results else None
        if model_ref is not None:
            info["source_model"] = self.model_key(model_ref)
        return lineage(info)

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.recipe
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        if r.data is not None:
            src = r.data.version or r.data.source
            self._stage(
                "data",
                {"cfg": r.data.model_dump(mode="json"), "source": self._data_fingerprint()},
                lambda: self._data(),
            )
            self.say(f"    dataset {src} -> {self.results['data']['ref']}")
        if r.train is not None:
            self._stage("train", self._train_key(), self._train)
        if r.prune is not None:
            self._stage(
                "prune",
                {
                    "cfg": r.prune.model_dump(mode="json"),
                    "model": self.model_key(r.prune.model),
                    "dataset": self.keys.get("data"),
                },
                self._prune,
            )
        if r.compress is not None:
            for item in r.compress.artifacts:
                name = f"compress:{self._label(item)}"
                self._stage(
                    name,
                    {
                        "item": item.model_dump(mode="json"),
                        "settings": r.compress.model_dump(mode="json", exclude={"artifacts"}),
                        "model": self.model_key(item.model),
                        "dataset": self.keys.get("data") if r.compress.calibration == "data" else None,
                    },
                    lambda item=item: self._compress(item),
                )
        if r.partition is not None:
            self._stage(
                "partition",
                {"cfg": r.partition.model_dump(mode="json"), "model": self.model_key(r.partition.model)},
                self._partition,
            )
        if r.export is not None:
            for m in r.export.models:
                self._stage(
                    f"export:{m}",
                    {
                        "cases": r.export.cases,
                        "model": self.model_key(m),
                        "dataset": self.keys.get("data"),
                    },
                    lambda m=m: self._export(m),
                )
        if r.bench is not None and r.export is not None:
            for m in r.export.models:
                self._stage(
                    f"bench:{m}",
                    {"cfg": r.bench.model_dump(mode="json"), "export": self.keys[f"export:{m}"]},
                    lambda m=m: self._bench(m),
                )
        if r.split is not None:
            self._stage(
                "split",
                {"cfg": r.split.model_dump(mode="json"), "partition": self.keys["partition"]},
                self._split,
            )
        if r.generate is not None:
            from edgellm.pipeline.run_generate import run_generate_stage

            run_generate_stage(self, r.generate)
        summary: dict[str, Any] = {
            "recipe": self.lineage_base["recipe"],
            "output": str(self.out),
            "stages": self.timings,
            "results": self.results,
            "elapsed_s": round(time.perf_counter() - t0, 1),
        }
        if r.report:
            from edgellm.pipeline.report import write_report

            summary["report"] = str(write_report(summary, self.out))
        return summary

    # -- stages --------------------------------------------------------------------------------------
    def _data_fingerprint(self) -> str:
        d = self.recipe.data
        assert d is not None
        if d.version is not None:
            from edgellm.data.store import parse_version

            if parse_version(d.version) is None:
                store = d.version.rpartition("@")[0] or d.version
                raise EdgeLLMError(
                    f"data.version '{d.version}': '{store}' is not a dataset store",
                    "give STORE@REF of a store made by edgellm data commit (see edgellm data log --store STORE)",
                )
            return source_fingerprint(d.version)  # resolves REF; a missing version fails here
        return source_fingerprint(self._source(d.source))

    def _source(self, s: str) -> str:
        if s == "pydoc" or Path(s).is_absolute() or "@" in s:
            return s
        return str(self.base / s) if (self.base / s).exists() else s

    def _data(self) -> dict[str, Any]:
        from edgellm.data.clean import CleanConfig, clean
        from edgellm.data.store import Store, dataset_version

        d = self.recipe.data
        assert d is not None
        if d.version is not None:
            v = dataset_version(d.version)
            assert v is not None
            return {"ref": f"{v['store']}@{v['commit']}", "version": v, "clean": None}
        store_dir = self.path(d.store)
        work = self.out / STATE_DIR / "clean"
        cfg = CleanConfig(
            **{"text_field": d.text_field, "workers": d.workers, **({"steps": d.steps} if d.steps else {})}
        )
        report = clean(self._source(d.source), work, cfg, force=True)
        store = Store(store_dir, create=True)
        commit = store.commit(work, f"edgellm run {self.recipe.name}: {d.source} cleaned")
        if d.tag:
            store.tag(d.tag, commit["id"])
        shutil.rmtree(work, ignore_errors=True)
        ref = f"{store_dir.resolve()}@{commit['id']}"
        stats = {
            k: report.get(k) for k in ("documents_in", "documents_out", "duplicates", "pii", "elapsed_s")
        }
        return {
            "ref": ref,
            "version": dataset_version(ref),
            "clean": stats,
            "_outputs": [str(store_dir / "commits" / f"{commit['id']}.json")],
        }

    def _train_cfg(self) -> Any:
        t = self.recipe.train
        assert t is not None
        update: dict[str, Any] = {"resume": True}
        if "output" not in t.model_fields_set:
            update["output"] = str(self.out / "train")
        if t.data is None and self.dataset() is not None:
            update["data"] = self.dataset()
        if t.model is not None:
            update["model"] = self.model_ref(t.model)
        return t.model_copy(update=update)

    def _train_key(self) -> dict[str, Any]:
        t = self.recipe.train
        assert t is not None
        return {
            "cfg": t.model_dump(mode="json", exclude={"progress", "resume", "stop_at"}),
            "dataset": self.keys.get("data") if t.data is None else source_fingerprint(self._source(t.data)),
            "model": self.model_key(t.model) if t.model is not None else None,
        }

    def _train(self) -> dict[str, Any]:
        from edgellm.train import train

        cfg = self._train_cfg()
        out = Path(cfg.output)
        marker = out / "run_key.txt"
        key = self.keys["train"]
        if marker.is_file() and marker.read_text().strip() != key:
            self.say(f"    the train section changed since {out}'s checkpoints: starting over")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(key + "\n")
        summary = train(cfg)
        if summary.get("steps") != cfg.max_steps:
            raise EdgeLLMError(
                f"training stopped at step {summary.get('steps')} of {cfg.max_steps}",
                "run the recipe again to resume from the last checkpoint",
            )
        source = cfg.model if cfg.scratch is None else {"scratch": cfg.scratch.architecture}
        lineage = {**self.lineage_base, "dataset": summary.get("dataset"), "source_model": source}
        atomic_write_text(out / "model" / "lineage.json", json.dumps(lineage, indent=2, default=str) + "\n")
        return {
            "model": str(out / "model"),
            "summary": summary,
            "_outputs": [str(out / "model" / "config.json")],
        }

    def _prune(self) -> dict[str, Any]:
        from edgellm.pipeline.prune import prune_and_report

        p = self.recipe.prune
        assert p is not None
        rep = prune_and_report(
            self.adapter(p.model),
            p.config,
            self.out / "prune" / "pruned",
            recover_steps=p.recover_steps,
            recover_lr=p.recover_lr,
            data=self.dataset(),
            runs=p.runs,
            force=True,
            log=lambda m: self.say(f"    {m}"),
        )
        return {
            "model": rep["output"],
            "record": rep["pruning"],
            "quality": rep["quality"],
            "quality_text": rep["quality_text"],
            "report": {k: rep[k] for k in ("params", "flops", "onnx_size_mb", "latency")},
            "_outputs": [str(Path(rep["output"]) / "pruning.json")],
        }

    @staticmethod
    def _label(item: CompressItem) -> str:
        return f"{Path(item.model).name}-{item.label or item.recipe}"

    def _compress(self, item: CompressItem) -> dict[str, Any]:
        from edgellm.compress.evaluate import accuracy_text
        from edgellm.pipeline.compress_search import compress

        c = self.recipe.compress
        assert c is not None
        adapter = self.adapter(item.model)
        dest = self.out / "compress" / self._label(item)
        with self.lineage(item.model):
            res = compress(
                adapter,
                item.config,
                target=item.target,
                output=dest,
                calib=self.dataset() if c.calibration == "data" else None,
                max_accuracy_drop=item.max_accuracy_drop,
                force=True,
                runs=c.runs,
                eval_sequences=c.eval_sequences,
                progress=False,
                log=lambda m: self.say(f"    {m}"),
            )
        rep, ev = res.report, res.artifact.manifest["evaluation"]
        acc = ev["accuracy"]
        return {
            "model": adapter.name,
            "recipe": item.label or item.recipe,
            "chosen": rep["chosen"],
            "artifact": str(res.artifact.path),
            "accuracy": accuracy_text(acc),
            "accuracy_detail": acc,
            "size_mb": round(res.artifact.size_bytes / 2**20, 2),
            "fp32_size_mb": rep["fp32"]["size_mb"],
            "p50_ms": ev["speed"]["p50_ms"],
            "fp32_p50_ms": rep["fp32"]["p50_ms"],
            "latency_ratio": round(ev["speed"]["ratio_vs_fp32"], 3),
            "shape": "batch 8, seq 128" if acc["metric"] == "embedding" else "batch 1, seq 128",
            "warnings": rep["warnings"],
            "_outputs": [str(res.artifact.path / "manifest.json")],
        }

    def _partition(self) -> dict[str, Any]:
        from edgellm.partition import Network, plan
        from edgellm.partition.report import write_plan

        p = self.recipe.partition
        assert p is not None
        adapter = self.adapter(p.model)
        split = plan(
            adapter,
            p.device,
            p.server,
            Network.parse(p.bandwidth, p.rtt, p.downlink),
            device_memory=p.device_memory,
            min_device_blocks=p.min_device_blocks,
            codecs=p.codecs,
            seq=p.seq,
            runs=p.runs,
        )
        title = f"{adapter.name}: {split.device} + {split.server}, {p.bandwidth} up, RTT {p.rtt}"
        plan_json, plan_png = write_plan(split, self.out / "partition", title=title)
        best = split.best
        self.say(
            f"    plan {split.id}: cut after {best['after_block'] or '(input)'} with {best['codec']}, "
            f"{best['total_ms']:.1f} ms predicted"
        )
        return {
            "plan": str(plan_json),
            "plot": str(plan_png),
            "id": split.id,
            "model": adapter.name,
            "device": split.device,
            "server": split.server,
            "network": {"bandwidth": p.bandwidth, "rtt": p.rtt, "downlink": p.downlink},
            "best": best,
            "candidates": split.candidates,
            "_outputs": [str(plan_json)],
        }

    def _export(self, m: str) -> dict[str, Any]:
        from edgellm.pipeline.target_matrix import MATRIX, export_matrix

        e = self.recipe.export
        assert e is not None
        adapter = self.adapter(m)
        cases = MATRIX if e.cases == "all" else [tuple(c) for c in e.cases]
        with self.lineage(m):
            rows = export_matrix(
                adapter,
                self.out / "targets",
                cases=cases,
                calib=self.dataset(),
                log=lambda s: self.say(s),
            )
        table = [
            {
                "target": r.target,
                "format": r.format,
                "precision": r.precision,
                "artifact": str(r.artifact.path) if r.artifact is not None else None,
                "kept": r.kept,
                "error": r.error,
            }
            for r in rows
        ]
        failed = [f"{r['target']}/{r['format']}/{r['precision']}: {r['error']}" for r in table if r["error"]]
        for f in failed:
            self.say(f"    failed: {f}")
        return {
            "model": adapter.name,
            "rows": table,
            "_outputs": [str(Path(r["artifact"]) / "manifest.json") for r in table if r["artifact"]],
        }

    def _bench(self, m: str) -> dict[str, Any]:
        from edgellm.bench import bench_artifact
        from edgellm.export import Artifact
        from edgellm.pipeline.target_matrix import MatrixRow, bench_matrix

        b = self.recipe.bench
        assert b is not None
        rows = []
        for r in self.results[f"export:{m}"]["rows"]:
            row = MatrixRow(r["target"], r["format"], r["precision"], error=r["error"], kept=r["kept"])
            if r["artifact"]:
                row.artifact = Artifact.load(r["artifact"])
            rows.append(row)
        server = next(
            (
                x
                for x in rows
                if x.artifact is not None
                and (x.target, x.format, x.precision) == ("x86-server", "onnx", "fp32")
            ),
            None,
        )
        host = None
        if server is not None:
            self.say("    torch fp32 vs ONNX Runtime fp32 (x86-server), interleaved")
            host = bench_artifact(
                server.artifact,
                batches=b.batch,
                seqs=b.seq,
                runs=b.runs,
                warmup=b.warmup,
                threads=b.threads,
                reference=True,
                progress=False,
            ).to_dict()
        self.say("    every target's artifact on this host, interleaved (batch 1, seq 128)")
        bench_matrix(rows, runs=max(10, b.runs // 2), threads=b.threads)
        return {"model": m, "host": host, "matrix": [r.to_dict() for r in rows]}

    def _split(self) -> dict[str, Any]:
        from edgellm.partition.split_export import MIN_COSINE, export_split
        from edgellm.pipeline.split_check import split_check
        from edgellm.runtime.codecs import Codec

        s, p = self.recipe.split, self.recipe.partition
        assert s is not None and p is not None
        part = self.results["partition"]
        adapter = self.adapter(p.model)
        dest = self.out / "split"
        choice = {"plan": part["plan"]} if s.cut is None else {"cut": s.cut, "codec": s.codec or "fp16"}
        with self.lineage(p.model):
            arts = export_split(
                adapter,
                **choice,
                device=p.device,
                server=p.server,
                output=dest,
                device_format=s.device_format,
                seq_len=s.seq_len,
                force=True,
            )
        link = arts.link
        self.say(
            f"    exported: cut after {link['after_block'] or '(input)'}, {link['codec']}; chain cosine "
            f"{link['parity']['cosine_min']:.5f}"
        )
        check = split_check(arts, adapter, requests=s.requests, log=self.say)
        need = MIN_COSINE[Codec(link["codec"] if link["codec"] not in ("none", "raw") else "fp32").format]
        if check["cosine_min"] < need:
            raise EdgeLLMError(
                f"the split model served on loopback reaches cosine {check['cosine_min']:.5f} against the "
                f"unsplit model; {link['codec']} needs >= {need}",
                "re-plan with a wider codec (partition.codecs) or another cut",
            )
        return {
            "dir": str(dest),
            "plan_id": link["plan_id"],
            "cut": link["cut"],
            "after_block": link["after_block"],
            "codec": link["codec"],
            "export_parity": link["parity"],
            "check": check,
            "predicted": part["best"],
            "_outputs": [str(dest / "split.json")],
        }


def run_recipe(
    path: str | Path, *, output: str | Path | None = None, force: bool = False, log: Any = None
) -> dict[str, Any]:
    """Load ``path`` (a recipe YAML) and run it; returns the run summary (stages, results, report path)."""
    recipe = Recipe.load(path)
    return Pipeline(recipe, path, output=output, force=force, log=log).run()


__all__ = ["Pipeline", "run_recipe", "source_fingerprint"]
