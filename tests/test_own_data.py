"""docs/OWN-DATA.md, run as written: a corpus in three formats (.jsonl, .jsonl.zst, parquet) written here from
the embedded plays, prepared with a BPE of 512 tokens, the shipped small sweep (sweeps/small.yaml) checked,
launched, fitted, planned and reported. The plan inherits the sweep: its seq_len, vocabulary and tokenizer."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.shards import read_manifest
from workbench.store.database import Store

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "OWN-DATA.md"
runner = CliRunner()


def documents(every: int = 2, size: int = 2000) -> list[str]:
    """Documents of about `size` characters (whole paragraphs) from every `every`-th embedded play."""
    from workbench.data.tokenizer import corpus_files

    docs = []
    for path in corpus_files("shakespeare")[::every]:
        chunk: list[str] = []
        for paragraph in (p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()):
            chunk.append(paragraph)
            if sum(map(len, chunk)) > size:
                docs.append("\n\n".join(chunk))
                chunk = []
        if chunk:
            docs.append("\n\n".join(chunk))
    return docs


def write_corpus(folder: Path) -> None:
    """corpus/part-a.jsonl, part-b.jsonl.zst and part-c.parquet: a third of the documents each."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = documents()
    third = len(docs) // 3
    folder.mkdir(parents=True)

    def lines(part: list[str]) -> str:
        return "".join(json.dumps({"text": d}) + "\n" for d in part)

    (folder / "part-a.jsonl").write_text(lines(docs[:third]))
    (folder / "part-b.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(lines(docs[third : 2 * third]).encode())
    )
    pq.write_table(pa.table({"text": docs[2 * third :]}), folder / "part-c.parquet")


def walkthrough() -> tuple[str, list[list[str]]]:
    """(the sweep YAML shown, the `workbench` commands in order) of docs/OWN-DATA.md."""
    text = DOC.read_text()
    (sweep,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    commands = [
        shlex.split(line)[1:]
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("workbench ")
    ]
    return sweep, commands


def test_the_own_data_walkthrough_runs_as_written_and_the_plan_inherits_the_sweep(workdir):
    sweep_text, commands = walkthrough()
    shipped = (ROOT / "sweeps" / "small.yaml").read_text()
    assert sweep_text == shipped  # the doc shows the shipped small sweep, byte for byte
    assert [c[:2] for c in commands] == [
        ["data", "prepare"],
        ["sweep", "plan"],
        ["sweep", "launch"],
        ["fit", "small"],
        ["plan", "--compute"],
        ["report", "small"],
    ]
    write_corpus(workdir / "corpus")
    (workdir / "sweeps").mkdir()
    (workdir / "sweeps" / "small.yaml").write_text(shipped)
    out = {}
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        out[" ".join(args[:2])] = result.output

    manifest = read_manifest(workdir / "data" / "mine")
    tokenizer = manifest["tokenizer"]
    assert (tokenizer["kind"], tokenizer["vocab_size"]) == ("bpe", 512)
    assert "checks: tokenizer and vocabulary, sizes per budget, data and executor all pass here" in out["sweep plan"]
    assert "sweep small (version 1): ran 9 of 9 runs (local): 9 completed, 0 failed, 0 skipped" in out["sweep launch"]
    assert "fit of sweep small: 9 completed runs, version 1 of 1 (spec " in out["fit small"]
    fit = json.loads((workdir / "fits" / "small.json").read_text())
    assert fit["sweep_version"]["version"] == 1 and fit["sweep_spec"]["data"]["seq_len"] == 64

    # the plan trains as the sweep did: its seq_len, vocabulary and tokenizer, on its data, on CPU
    spec = yaml.safe_load(shipped)
    (stored,) = [json.loads(p) for p in Store(workdir / "workbench.duckdb", read_only=True).plans()["plan"]]
    inherited = stored["inherited"]
    assert inherited["seq_len"] == spec["data"]["seq_len"] == stored["shape"]["seq_len"] == 64
    assert inherited["vocab_size"] == spec["model"]["vocab_size"] == stored["shape"]["vocab_size"] == 512
    assert inherited["tokenizer"] == tokenizer["name"] and inherited["data"] == ["data/mine"]
    text = out["plan --compute"]
    assert stored["target"] == "cpu" and stored["gpu_hours"] is None and stored["layout"] is None
    assert "FLOPs on CPU (no GPU-hours: the target is a CPU)" in text and "GPU-hours on" not in text
    assert text.count("predicted loss") == 1 and text.count("\n  inherited ") == 3
    config = yaml.safe_load((workdir / "runs" / "small-flagship.yaml").read_text())
    assert config["data"]["seq_len"] == 64 and config["model"]["vocab_size"] == 512
    assert config["data"]["sources"][0]["path"] == "data/mine" and config["runtime"]["device"] == "cpu"
    assert config["schedule"]["kind"] == "cosine" and config["schedule"]["floor"] == 0.0
    assert config["optim"]["lr_peak"] == stored["lr_peak"] and config["batch"]["batch_tokens"] == 1024

    report = (workdir / "reports" / "small.html").read_text()
    assert "version 1 of 1 (spec " in report
