"""`workbench data`: prepare token shards from text, and show what a prepared folder holds."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from workbench.commands.options import echo_json, json_option
from workbench.core.errors import WorkbenchError
from workbench.core.units import human, parse_count

app = typer.Typer(no_args_is_help=True)


@app.command("prepare")
def prepare_command(
    inputs: list[str] = typer.Argument(
        None,
        help="Files, folders or globs: .txt, .jsonl(.gz/.zst), .json.gz, .parquet, a saved HF dataset folder, "
        "hf:BUILDER:FILES, token files .bin (nanoGPT/llm.c) or Megatron .bin+.idx. None: --corpus.",
    ),
    corpus: str = typer.Option(None, "--corpus", help="An embedded corpus instead of inputs: shakespeare."),
    out: Path = typer.Option(
        None, "--out", help="Output folder; default for the embedded corpus with bytes: data/shakespeare-bytes."
    ),
    tokenizer: str = typer.Option(
        "bytes", "--tokenizer", help="bytes | bpe | PATH/tokenizer.json | PATH.tiktoken | ids (pre-tokenized inputs)"
    ),
    vocab_size: str = typer.Option(None, "--vocab-size", help="Vocabulary of the BPE trained here, e.g. 4096 or 32K."),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Held-out tail of every input file."),
    text_field: str = typer.Option("text", "--text-field", help="The field of .jsonl records that holds the text."),
    shard_tokens: str = typer.Option("100M", "--shard-tokens", help="Tokens per shard file, e.g. 100M."),
    force: bool = typer.Option(False, "--force", help="Replace a folder prepared from other inputs."),
    split_pattern: str = typer.Option(None, "--split-pattern", help="A .tiktoken file's pre-tokenizer regex."),
    special_token: list[str] = typer.Option(
        None, "--special-token", help="A .tiktoken file's special token NAME=ID (repeatable)."
    ),
    eot_id: int = typer.Option(
        None, "--eot-id", help="End-of-text id (pre-tokenized inputs; overrides the tokenizer's)."
    ),
    token_dtype: str = typer.Option(
        "uint16", "--token-dtype", help="dtype of .bin token files without an llm.c header."
    ),
    as_json: bool = json_option(),
) -> None:
    """Tokenize text into train/val shards with a manifest (atomic; a re-run with the same inputs does nothing)."""
    from workbench.data.prepare import default_corpus_dir, prepare

    if out is None:
        if inputs or tokenizer != "bytes":
            raise WorkbenchError("--out is required", "Name the output folder, e.g. --out data/mytext.")
        out = default_corpus_dir()
    started = time.perf_counter()
    manifest = prepare(
        inputs or [],
        out,
        tokenizer=tokenizer,
        vocab_size=None if vocab_size is None else parse_count(vocab_size, "--vocab-size"),
        val_fraction=val_fraction,
        text_field=text_field,
        force=force,
        progress=sys.stderr.isatty(),
        corpus=corpus,
        shard_tokens=parse_count(shard_tokens, "--shard-tokens"),
        split_pattern=split_pattern,
        special_tokens=_special_tokens(special_token or []),
        eot_id=eot_id,
        token_dtype=token_dtype,
    )
    if as_json:
        echo_json({"out": str(out), "wall_s": time.perf_counter() - started, **manifest})
        return
    if manifest["reused"]:
        typer.echo(f"{out} already holds this data set (same inputs and options): nothing to do.")
        return
    tokens, tok = manifest["tokens"], manifest["tokenizer"]
    typer.echo(
        f"Prepared {out}: {human(tokens['train'])} train + {human(tokens['val'])} val tokens "
        f"({tok['kind']}, vocab {tok['vocab_size']}, {manifest['dtype']}) from {len(manifest['sources'])} files "
        f"in {time.perf_counter() - started:.2f} s."
    )


def _special_tokens(items: list[str]) -> dict[str, int] | None:

    tokens = {}
    for item in items:
        name, _, value = item.rpartition("=")
        if not name or not value.isdigit():
            raise WorkbenchError(
                f"--special-token {item!r} is not NAME=ID", "E.g. --special-token '<|endoftext|>=100257'."
            )
        tokens[name] = int(value)
    return tokens or None


@app.command()
def show(
    folder: Path = typer.Argument(..., help="A folder written by `workbench data prepare`."),
    as_json: bool = json_option(),
) -> None:
    """Summarize a prepared data set: sources, tokenizer, token counts, shards, hash and a text sample."""
    import numpy as np

    from workbench.data.shards import read_manifest
    from workbench.data.tokenizer import load_tokenizer

    manifest = read_manifest(folder)
    first = manifest["shards"]["train"][0]
    sample_ids = np.memmap(Path(folder) / first["file"], dtype=manifest["dtype"], mode="r")[:120]
    sample = load_tokenizer(folder).decode(sample_ids)
    if as_json:
        echo_json({"folder": str(folder), **manifest, "sample": sample})
        return
    tok, tokens, shards = manifest["tokenizer"], manifest["tokens"], manifest["shards"]
    sources = manifest["sources"]
    what = f"corpus {manifest['corpus']}" if manifest.get("corpus") else "inputs"
    lines = [
        f"folder      {folder}",
        f"sources     {what}: {len(sources)} files, {human(sum(s['bytes'] for s in sources))} bytes",
        f"tokenizer   {tok.get('name', tok['kind'])}, vocab {tok['vocab_size']}, end-of-text id {tok['eot_id']}",
        f"tokens      train {tokens['train']:,}  val {tokens['val']:,}  ({manifest['dtype']})",
        f"shards      train {len(shards['train'])}  val {len(shards['val'])}",
        f"options     {', '.join(f'{k} {v}' for k, v in manifest['options'].items())}",
        f"data hash   {manifest['data_sha256'][:16]}",
    ]
    lines.append(f"sample      {sample.replace(chr(10), ' ')[:100]!r}")
    typer.echo("\n".join(lines))
