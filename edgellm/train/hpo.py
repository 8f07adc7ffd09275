"""Hyper-parameter search with Optuna: TPE (Bayesian) sampling, median pruning of bad trials, trials in
parallel processes, a results table and the best config saved.

The search space lives in the config (``search:``), one entry per TrainConfig key::

    search:
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      warmup_steps: {type: int, low: 0, high: 50}
      schedule: {type: categorical, choices: [cosine, linear]}

Each trial trains into ``OUT/trials/trial-N`` and reports its evaluation loss at every evaluation, so the
median pruner can stop a trial whose curve is worse than the median of earlier trials at the same step.
Parallel trials (``n_jobs``) are separate processes sharing a journal file, so they never share the
trainer's process state.

Example:
    >>> result = search(TrainConfig(model="tiny-llama", output="out/hpo"), space, n_trials=12, n_jobs=2)  # doctest: +SKIP
    >>> result["best"]["params"]                                                                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

from edgellm.errors import EdgeLLMError
from edgellm.train.config import TrainConfig
from edgellm.train.loop import train

KINDS = ("float", "int", "categorical")


def _check_space(space: dict[str, Any]) -> None:
    if not space:
        raise EdgeLLMError(
            "the search space is empty",
            "add e.g. search: {lr: {type: float, low: 1e-4, high: 1e-2, log: true}}",
        )
    for key, spec in space.items():
        if key not in TrainConfig.model_fields or key in ("search", "output", "model"):
            raise EdgeLLMError(
                f"search.{key}: not a setting to search", "search over training settings, e.g. lr"
            )
        if not isinstance(spec, dict) or spec.get("type") not in KINDS:
            raise EdgeLLMError(
                f"search.{key}: needs type: {' | '.join(KINDS)}", "e.g. {type: float, low: 1e-4, high: 1e-2}"
            )
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise EdgeLLMError(
                f"search.{key}: a categorical needs choices", "e.g. {type: categorical, choices: [a, b]}"
            )
        if spec["type"] != "categorical" and not (
            "low" in spec and "high" in spec and spec["low"] < spec["high"]
        ):
            raise EdgeLLMError(f"search.{key}: needs low < high", "e.g. {type: float, low: 1e-4, high: 1e-2}")


def _suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            out[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log"))
            )
        elif spec["type"] == "int":
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            out[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return out


def _objective(base: dict[str, Any], space: dict[str, Any], root: str):
    import optuna

    def run(trial: Any) -> float:
        params = _suggest(trial, space)
        cfg = TrainConfig(
            **{
                **base,
                **params,
                "output": str(Path(root) / "trials" / f"trial-{trial.number}"),
                "progress": False,
            }
        )

        def report(step: int, rec: dict[str, Any]) -> None:
            trial.report(rec["eval_loss"], step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        s = train(cfg, on_eval=report)
        return float(s["final"]["eval_loss"])

    return run


def _worker(
    storage_path: str, name: str, base: dict, space: dict, root: str, n_trials: int, seed: int
) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage_path))
    study = optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.optimize(_objective(base, space, root), n_trials=n_trials, catch=(EdgeLLMError,))


def search(
    base: TrainConfig, space: dict[str, Any], *, n_trials: int = 10, n_jobs: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Run the study; writes ``OUT/hpo.json``, ``OUT/hpo.md`` and ``OUT/best.yaml``; returns the results."""
    try:
        import optuna
    except ImportError as exc:
        raise EdgeLLMError("hyper-parameter search needs Optuna", "pip install 'edgellm[train]'") from exc
    import yaml

    _check_space(space)
    root = Path(base.output)
    root.mkdir(parents=True, exist_ok=True)
    journal = root / "hpo.journal"
    journal.unlink(missing_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    name = "edgellm"
    optuna.create_study(study_name=name, storage=storage, direction="minimize")
    args = (str(journal), name, base.model_dump(exclude={"search"}), space, str(root))
    per = [n_trials // n_jobs + (1 if i < n_trials % n_jobs else 0) for i in range(max(1, n_jobs))]
    if n_jobs <= 1:
        _worker(*args, n_trials, seed)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(*args, k, seed + i)) for i, k in enumerate(per) if k]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise EdgeLLMError(
                f"{len(failed)} search worker(s) failed (exit {failed[0]})", "see their output above"
            )
    study = optuna.load_study(study_name=name, storage=storage)
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "steps_reported": len(t.intermediate_values),
        }
        for t in study.trials
    ]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    if not complete:
        raise EdgeLLMError("no trial completed", "widen the search space or check the trials' errors")
    best = min(complete, key=lambda t: t["value"])
    best_cfg = {**base.model_dump(exclude={"search"}), **best["params"]}
    result = {
        "metric": "eval_loss",
        "direction": "minimize",
        "trials": trials,
        "best": best,
        "n_jobs": n_jobs,
    }
    (root / "hpo.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (root / "best.yaml").write_text(yaml.safe_dump(best_cfg, sort_keys=False))
    lines = ["| trial | state | eval loss | " + " | ".join(space) + " |", "|---" * (3 + len(space)) + "|"]
    for t in sorted(trials, key=lambda t: (t["value"] is None, t["value"] or 0)):
        v = f"{t['value']:.4f}" if t["value"] is not None else "-"
        lines.append(
            f"| {t['number']} | {t['state'].lower()} | {v} | "
            + " | ".join(str(t["params"].get(k)) for k in space)
            + " |"
        )
    (root / "hpo.md").write_text("\n".join(lines) + "\n")
    return result
