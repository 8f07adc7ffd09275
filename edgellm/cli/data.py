"""``edgellm data``: clean corpora, sample and augment them, and keep versioned datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgellm.cli._common import console, emit_json

app = typer.Typer(
    help="Data front end: clean (normalise, quality filters, language, PII, exact + near dedup), sample, "
    "augment, and a versioned dataset store.\n\n"
    "Example: edgellm data clean corpus.jsonl -o out/clean && edgellm data commit out/clean --store data/store -m 'v1'",
    no_args_is_help=True,
)

STORE_OPT = typer.Option(Path("edgellm-data"), "--store", "-s", help="The dataset store folder.")


@app.command("clean")
def clean_cmd(
    source: Path = typer.Argument(..., help="A .jsonl, .parquet or .txt file, or a folder of them."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Folder for the cleaned shards and _report/ (not with --dry-run)."
    ),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="clean.yaml: steps and settings."),
    text_field: Optional[str] = typer.Option(
        None, "--text-field", help="Field holding the text (default: text)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=0, help="Worker processes (0: one per core)."
    ),
    on_error: Optional[str] = typer.Option(
        None, "--on-error", help="Malformed JSONL lines: skip (count them) or stop."
    ),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Input encoding (default utf-8)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Output format: jsonl or parquet."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="Quality preset of every quality step: web, docs, short or auto."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what each quality rule would drop per preset; write nothing."
    ),
    all_docs: bool = typer.Option(
        False, "--all", help="With --dry-run: profile every document, not the first profile_docs."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Clean SOURCE into OUTPUT (sharded), with a JSON + markdown report and the near-duplicate clusters.

    The quality step's preset (web: Gopher/C4 for web pages; docs: technical prose; short: fine-tuning
    examples and answers) is chosen on the first documents unless named (auto); --dry-run prints that
    choice and what every rule would drop under each preset, with examples, and writes nothing.

    Example: edgellm data clean corpus.jsonl --dry-run && edgellm data clean corpus.jsonl -o out/clean --workers 2

    clean.yaml: {text_field: content, steps: [normalize, {quality: {preset: docs, min_words: 20}},
    {language: {keep: [en]}}, {pii: {action: hash, salt_env: MY_SALT}}, exact_dedup, {near_dedup: {threshold: 0.8}}]}
    """
    from edgellm.data.clean import CleanConfig
    from edgellm.errors import EdgeLLMError

    if output is None and not dry_run:
        raise EdgeLLMError(
            "no output folder given", "give --output (or --dry-run to only see what would be dropped)"
        )
    cfg = CleanConfig.load(
        config, text_field=text_field, workers=workers, on_error=on_error, encoding=encoding, format=fmt
    )
    if preset is not None:
        from edgellm.data.profile import quality_items, with_preset

        if dry_run and not quality_items(cfg.steps):
            cfg = cfg.model_copy(update={"steps": [*cfg.steps, "quality"]})
        cfg = cfg.model_copy(update={"steps": with_preset(cfg.steps, preset)})
    if dry_run:
        from edgellm.data.clean import dry_run as run_dry
        from edgellm.data.profile import profile_markdown

        d = run_dry(source, cfg, all_docs=all_docs)
        if json_out:
            emit_json(d)
            return
        console().print(profile_markdown(d["quality"]["profile"]), markup=False)
        console().print("nothing written (--dry-run)")
        return
    from edgellm.data.clean import clean, report_markdown

    r = clean(source, output, cfg, force=force)
    if json_out:
        emit_json(r)
        return
    console().print(report_markdown(r), markup=False)
    console().print(f"wrote {output} ({len(r['shards'])} shard(s)) and {output}/_report/")


@app.command("sample")
def sample_cmd(
    source: Path = typer.Argument(..., help="A corpus (.jsonl/.parquet/.txt or folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the sample."),
    by: str = typer.Option(..., "--by", help="The field to stratify by, e.g. lang or label."),
    n: int = typer.Option(..., "--n", min=1, help="Sample size."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help='Target shares as JSON, e.g. \'{"en": 0.7, "de": 0.3}\'.'
    ),
    min_per_class: int = typer.Option(
        0, "--min-per-class", min=0, help="At least this many per class (or all it has)."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Stratified sample of SOURCE by a field, with target weights and a minimum per class.

    Example: edgellm data sample out/clean -o out/sample --by lang --n 1000 --min-per-class 20
    """
    import pyarrow as pa

    from edgellm.data.io import CorpusReader, ShardWriter
    from edgellm.data.sample import stratified_sample
    from edgellm.errors import EdgeLLMError

    try:
        w = json.loads(weights) if weights else None
    except ValueError as exc:
        raise EdgeLLMError(f"--weights is not JSON: {exc}", 'write e.g. \'{"en": 0.7, "de": 0.3}\'') from exc
    reader = CorpusReader(source, text_field=text_field)

    def rows():
        for b in reader.batches():
            yield from b.to_pylist()

    sample, rep = stratified_sample(rows, by, n, weights=w, min_per_class=min_per_class, seed=seed)
    with ShardWriter(output, force=force) as sw:
        if sample:
            sw.write(pa.RecordBatch.from_pylist(sample))
        (sw.tmp / "_report").mkdir()
        (sw.tmp / "_report" / "sample.json").write_text(json.dumps(rep, indent=2) + "\n")
    emit_json(rep)


@app.command("augment")
def augment_cmd(
    source: Path = typer.Argument(..., help="A corpus (.jsonl/.parquet/.txt or folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for originals + augmented copies."),
    n_aug: int = typer.Option(2, "--n-aug", min=1, help="Augmented copies per document."),
    alpha: float = typer.Option(
        0.1, "--alpha", min=0.0, max=1.0, help="Share of words each EDA operation touches."
    ),
    synonyms: Optional[Path] = typer.Option(
        None, "--synonyms", help="JSON {word: [synonyms]} (default: shipped)."
    ),
    forward: Optional[Path] = typer.Option(
        None, "--back-translate-forward", help="Seq2seq model folder: source -> pivot."
    ),
    backward: Optional[Path] = typer.Option(
        None, "--back-translate-backward", help="Seq2seq model folder: pivot -> source."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """EDA augmentation (synonym replacement, insertion, swap, deletion), optionally back-translation.

    Example: edgellm data augment out/clean -o out/aug --n-aug 2 --alpha 0.1
    """
    import pyarrow as pa

    from edgellm.data.augment import EDA, back_translate, load_synonyms
    from edgellm.data.io import CorpusReader, ShardWriter
    from edgellm.errors import EdgeLLMError

    if (forward is None) != (backward is None):
        raise EdgeLLMError(
            "back-translation needs both models",
            "pass --back-translate-forward and --back-translate-backward",
        )
    eda = EDA(load_synonyms(synonyms), seed=seed)
    made = 0
    with ShardWriter(output, force=force) as sw:
        for b in CorpusReader(source, text_field=text_field).batches():
            rows = b.to_pylist()
            out = []
            for r in rows:
                out.append({**r, "augmented": "original"})
                for k, t in enumerate(eda.augment(r["text"], alpha=alpha, n_aug=n_aug)):
                    out.append({**r, "id": f"{r['id']}#eda{k}", "text": t, "augmented": "eda"})
            if forward is not None:
                bt = back_translate([r["text"] for r in rows], forward, backward, seed=seed)
                out += [
                    {**r, "id": f"{r['id']}#bt", "text": t, "augmented": "back_translation"}
                    for r, t in zip(rows, bt)
                ]
            made += len(out) - len(rows)
            sw.write(pa.RecordBatch.from_pylist(out))
    console().print(f"wrote {output}: {made} augmented documents")


# -- the dataset store -----------------------------------------------------------------------------------
@app.command("commit")
def commit_cmd(
    folder: Path = typer.Argument(..., help="The folder to commit (e.g. what edgellm data clean wrote)."),
    message: str = typer.Option(..., "--message", "-m", help="What this version is."),
    store: Path = STORE_OPT,
) -> None:
    """Commit FOLDER as a new dataset version (content-addressed; config and stats from its report).

    Example: edgellm data commit out/clean --store data/store -m "pydoc, cleaned"
    """
    from edgellm.data.store import Store

    c = Store(store, create=True).commit(folder, message)
    console().print(
        f"committed {c['id'][:12]} ({len(c['files'])} files): {message}\nuse it as {store}@{c['id'][:12]}",
        markup=False,
    )


@app.command("log")
def log_cmd(
    ref: str = typer.Argument("HEAD", help="Where to start."),
    store: Path = STORE_OPT,
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Versions from REF back to the first.

    Example: edgellm data log --store data/store
    """
    from edgellm.data.store import Store

    s = Store(store)
    log = s.log(ref)
    if json_out:
        emit_json(log)
        return
    tags: dict[str, list[str]] = {}
    for name, cid in s.tags().items():
        tags.setdefault(cid, []).append(name)
    for c in log:
        docs = (c.get("stats") or {}).get("documents_out")
        console().print(
            f"{c['id'][:12]} {c['created_at']} {c['message']}"
            + (f" ({docs} documents)" if docs is not None else "")
            + (f" [{', '.join(tags[c['id']])}]" if c["id"] in tags else ""),
            markup=False,
        )


@app.command("diff")
def diff_cmd(a: str = typer.Argument(...), b: str = typer.Argument("HEAD"), store: Path = STORE_OPT) -> None:
    """Files added, removed and changed between two versions, and their document counts.

    Example: edgellm data diff v1 v2 --store data/store
    """
    from edgellm.data.store import Store

    emit_json(Store(store).diff(a, b))


@app.command("checkout")
def checkout_cmd(
    ref: str = typer.Argument(..., help="A tag, a commit id (or prefix), or HEAD."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write the version into."),
    store: Path = STORE_OPT,
    force: bool = typer.Option(False, "--force", help="Replace an existing folder."),
) -> None:
    """Write version REF into a folder (hashes verified); the folder records which version it is.

    Example: edgellm data checkout v1 -o work/v1 --store data/store
    """
    from edgellm.data.store import Store

    c = Store(store).checkout(ref, output, force=force)
    console().print(f"checked out {c['id'][:12]} into {output}")


@app.command("tag")
def tag_cmd(
    name: str = typer.Argument(...), ref: str = typer.Argument("HEAD"), store: Path = STORE_OPT
) -> None:
    """Name a version.

    Example: edgellm data tag v1 --store data/store
    """
    from edgellm.data.store import Store

    cid = Store(store).tag(name, ref)
    console().print(f"{name} -> {cid[:12]}")


@app.command("verify")
def verify_cmd(
    store: Path = STORE_OPT,
    fix: bool = typer.Option(
        False, "--fix", help="First remove what interrupted writes left (as edgellm data gc does)."
    ),
) -> None:
    """Check every version's files against their hashes, every ref against the commits, and that no
    interrupted write left temporary files (exit 2 if anything is wrong).

    Example: edgellm data verify --store data/store --fix
    """
    from edgellm.data.store import Store
    from edgellm.errors import EdgeLLMError

    s = Store(store)
    if fix:
        _print_gc(store, s.gc())
    problems = s.verify()
    if problems:
        only_leftovers = len(problems) == 1 and s.leftovers()
        raise EdgeLLMError(
            f"store '{store}' has {len(problems)} problem(s): {'; '.join(problems[:5])}",
            f"remove them with: edgellm data verify --fix --store {store} (or edgellm data gc)"
            if only_leftovers
            else "restore the objects from a backup, or re-commit (--fix removes only temporary files "
            "and unreferenced objects)",
        )
    try:
        garbage = s.gc(dry_run=True)["unreferenced"]
    except EdgeLLMError:  # a commit is in progress: its objects are not garbage
        garbage = 0
    console().print(
        f"store {store}: every version verified"
        + (f" ({garbage} unreferenced object(s): edgellm data gc frees them)" if garbage else ""),
        markup=False,
        soft_wrap=True,
    )


@app.command("gc")
def gc_cmd(
    store: Path = STORE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
) -> None:
    """Remove the temporary files interrupted writes left and the objects no version references; every
    committed version is kept (refused while a commit is in progress).

    Example: edgellm data gc --store data/store
    """
    from edgellm.data.store import Store

    _print_gc(store, Store(store).gc(dry_run=dry_run), dry_run=dry_run)


def _print_gc(store: Path, r: dict[str, int], *, dry_run: bool = False) -> None:
    verb = "would remove" if dry_run else "removed"
    console().print(
        f"store {store}: {verb} {r['temporary']} temporary file(s) and {r['unreferenced']} unreferenced "
        f"object(s) ({r['bytes']} bytes)",
        markup=False,
        soft_wrap=True,
    )
