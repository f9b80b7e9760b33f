"""Hostile input, second campaign (part 1): no write outside its folder, no shell line from a config, no
unknown status into a page, `--force` deletes only what prepare wrote, inputs checked like a parser would.

Each test is one numbered case of the campaign (docs/LIMITS.md): the hostile file or value, then the
one-line error and what must not have happened (a file written elsewhere, a line in a script).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from hostile import files_under, invoke, one_line, wandb_file

from workbench.core.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"_step": s, "loss": 4.0 - 0.1 * s, "val_loss": 4.1 - 0.1 * s, "tokens": 1024 * s} for s in range(1, 6)]


def _csv(path: Path, rows: str = "") -> Path:
    path.write_text("_step,loss,val_loss\n" + (rows or "".join(f"{s},{4 - s / 10},{4.1 - s / 10}\n" for s in (1, 2))))
    return path


# ------------------------------------------------------------------ 1: db import writes nothing outside --runs
def test_import_of_a_wandb_run_whose_id_is_a_path_writes_nothing(tmp_path):
    victim = tmp_path / "victim" / "runs" / "s" / "r1"
    victim.mkdir(parents=True)
    (victim / "config.yaml").write_text("name: r1\n")
    runs = tmp_path / "a" / "b" / "runs"  # --runs; the import goes to runs/imported
    log = wandb_file(tmp_path / "in" / "run-x.wandb", "../../../../../victim/runs/s/r1", ROWS)
    before = files_under(tmp_path)
    line = one_line(invoke("db", "import", log, "--runs", runs, "--db", tmp_path / "wb.duckdb"))
    assert "run id" in line and "not a plain name" in line
    assert files_under(tmp_path) == before  # nothing written anywhere: the id is refused before the first write


@pytest.mark.parametrize("run_id", ["../../x", "..", "a/b", ".hidden", "x" * 200, "a\nb"])
def test_import_run_id_option_that_is_a_path_writes_nothing(tmp_path, run_id):
    source = _csv(tmp_path / "h.csv")
    before = files_under(tmp_path)
    one_line(invoke("db", "import", source, "--runs", tmp_path / "runs", "--run-id", run_id), "not a plain name")
    assert files_under(tmp_path) == before


def test_import_of_a_csv_named_dots_writes_nothing(tmp_path):
    source = _csv(tmp_path / "...csv")  # its stem is "..": the run directory would be the parent of --into
    before = files_under(tmp_path)
    one_line(invoke("db", "import", source, "--runs", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), "'csv-..'")
    assert files_under(tmp_path) == before


def test_import_sweep_from_a_wandb_config_that_is_a_path_writes_nothing(tmp_path):
    log = wandb_file(tmp_path / "in" / "run-ok.wandb", "ok", ROWS, config={"meta": {"sweep": "../../evil"}})
    before = files_under(tmp_path)
    one_line(invoke("db", "import", log, "--runs", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), "meta.sweep")
    assert files_under(tmp_path) == before


def test_import_into_a_link_pointing_out_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "imported").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", tmp_path / "runs" / "imported" / "csv-h")  # the id the import gives h.csv
    one_line(invoke("db", "import", _csv(tmp_path / "h.csv"), "--runs", tmp_path / "runs"), "outside")
    assert not any((tmp_path / "elsewhere").iterdir())


# ------------------------------------------------------------------ 2: nothing from a config reaches a shell
HOSTILE_SLURM = ["gpu\ntouch PWNED", "gpu;touch PWNED", "$(touch PWNED)", "gpu --time=1", "a'b", "gpu#x", ""]


def _tiny_with(launch: dict) -> dict:
    spec = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    spec["launch"] |= launch
    return spec


@pytest.mark.parametrize("field", ["partition", "account", "qos"])
@pytest.mark.parametrize("value", HOSTILE_SLURM)
def test_slurm_fields_of_a_sweep_are_slurm_names(tmp_path, field, value):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_tiny_with({field: value, "executor": "slurm"})))
    line = one_line(invoke("sweep", "plan", path), f"launch.{field}")
    assert "\n" not in line and "not a Slurm" in line


@pytest.mark.parametrize("flag", ["partition", "account", "qos"])
def test_flagship_slurm_options_are_slurm_names(flag):
    from workbench.sweep.launch import flagship_launch_spec

    for value in HOSTILE_SLURM:
        fields = {"partition": None, "account": None, "qos": None} | {flag: value}
        with pytest.raises(WorkbenchError, match=f"{flag}: .* is not a Slurm {flag} name") as err:
            flagship_launch_spec("slurm", 1, 8, 8, fields["partition"], fields["account"], fields["qos"], 60)
        assert "\n" not in str(err.value)


def _header(script: str) -> dict[str, str]:
    """The #SBATCH options of a script, parsed back as sbatch reads them: the header ends at the first line
    that is neither a comment nor blank; each option line must be `#SBATCH --name[=value]`."""
    options = {}
    lines = script.splitlines()
    assert lines[0].startswith("#!")
    for line in lines[1:]:
        if line.strip() and not line.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            match = re.fullmatch(r"#SBATCH --([a-z][a-z0-9-]*)(?:=(\S+))?", line)
            assert match, f"not one option on one line: {line!r}"
            options[match[1]] = match[2]
    return options


def test_sbatch_script_of_hostile_values_is_refused_and_of_slurm_names_parses_back(tmp_path):
    from workbench.sweep.executors import sbatch_script
    from workbench.sweep.spec import Launch

    spec = Launch(partition="gpu,debug", account="proj-1", qos="high.prio", timeout_min=90, slurm_signal_delay_s=60)
    header = _header(sbatch_script(spec, tmp_path / "%j", array_size=None, job_name="wb-r1"))
    assert (header["partition"], header["account"], header["qos"]) == ("gpu,debug", "proj-1", "high.prio")
    assert header["time"] == "90" and header["signal"] == "USR2@60" and header["job-name"] == "wb-r1"
    for value in HOSTILE_SLURM[:-1]:  # a spec built around validation (model_construct) is still refused
        for field in ("partition", "account", "qos"):
            forged = spec.model_copy(update={field: value})
            with pytest.raises(WorkbenchError, match="sbatch line cannot carry"):
                sbatch_script(forged, tmp_path / "%j", array_size=None)


def test_sbatch_script_quotes_its_folder_and_refuses_one_that_would_end_a_line(tmp_path):
    import shlex

    from workbench.sweep.executors import Slurm, sbatch_script
    from workbench.sweep.spec import Launch

    spec = Launch(partition="gpu", timeout_min=60)
    folder = tmp_path / "my runs;touch PWNED" / "%j"
    script = sbatch_script(spec, folder, python="/opt/my env/python", array_size=None)
    header = _header(script.replace(f"'{folder}", "'FOLDER"))  # the quoted folder is one shell word
    assert header["partition"] == "gpu" and header["time"] == "60" and header["signal"] == "USR2@90"
    command = script.strip().splitlines()[-1]
    assert shlex.split(command)[-5:] == ["/opt/my env/python", "-u", "-m", "submitit.core._submit", str(folder)]
    for bad in ("runs\ntouch PWNED", "runs\rx", "a\tb"):
        with pytest.raises(WorkbenchError, match="control character") as err:
            sbatch_script(spec, tmp_path / bad / "%j", array_size=None)
        assert "\n" not in str(err.value)
        with pytest.raises(WorkbenchError, match="control character"):
            Slurm(spec, tmp_path / bad, "wb")


# ------------------------------------------------------------------ 3: enumerated fields where records are read
def _run_dir(root: Path, run_id: str = "r1", final: dict | None = None, meta: dict | None = None) -> Path:
    run = root / "s" / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": run_id, "meta": {"sweep": "s", **(meta or {})}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "tokens": 10, "loss": 3.0}) + "\n")
    record = {"status": "completed", "val_loss": 3.0, "tokens": 10} | (final or {})
    (run / "final.json").write_text(json.dumps(record))
    return run


@pytest.mark.parametrize("status", ["failed<!--<script>", "completed ", "COMPLETED", 1, None, ["completed"]])
def test_unknown_status_in_final_json_is_one_line_at_ingest(tmp_path, status):
    run = _run_dir(tmp_path / "runs", final={"status": status})
    line = one_line(invoke("db", "ingest", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), "status")
    assert str(run / "final.json") in line and "completed, diverged, failed, interrupted" in line


def test_unknown_kind_in_a_run_config_is_one_line_at_ingest(tmp_path):
    _run_dir(tmp_path / "runs", meta={"kind": "trunk</script><script>alert(1)//"})
    one_line(invoke("db", "ingest", tmp_path / "runs", "--db", tmp_path / "wb.duckdb"), "meta.kind", "run, trunk")


def test_unknown_method_in_a_fit_json_is_one_line_at_plan(tmp_path):
    fit = {
        "name": "f",
        "method": "isoflop<script>",
        "parametric": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3},
    }
    (tmp_path / "f.json").write_text(json.dumps(fit))
    one_line(invoke("plan", "--law", tmp_path / "f.json", "--compute", "1e21"), "method", "isoflop, parametric, all")


# ------------------------------------------------------------------ 4: --force deletes only what prepare wrote
def test_force_keeps_the_users_files_and_folders_in_out(tmp_path):
    from workbench.data.prepare import prepare

    for name, text in (("a.txt", "alpha beta gamma\n" * 400), ("b.txt", "delta epsilon\n" * 300)):
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    first = prepare([str(tmp_path / "a.txt")], out, shard_tokens=1000)
    (out / "NOTES.md").write_text("my notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "plot.png").write_bytes(b"\x89PNG")
    second = prepare([str(tmp_path / "b.txt")], out, force=True, shard_tokens=1000)
    assert second["inputs_sha256"] != first["inputs_sha256"]
    assert (out / "NOTES.md").read_text() == "my notes" and (out / "analysis" / "plot.png").read_bytes() == b"\x89PNG"
    listed = {s["file"] for split in second["shards"].values() for s in split}
    shards = {p.name for p in out.glob("*.bin")}
    assert shards == listed  # the first data set's extra shards are gone, the new ones are all there
    assert json.loads((out / "manifest.json").read_text())["inputs_sha256"] == second["inputs_sha256"]


def test_out_inside_an_input_folder_is_refused(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("some text to prepare\n" * 50)
    before = files_under(tmp_path)
    args = ["data", "prepare", tmp_path / "corpus", "--out", tmp_path / "corpus" / "prepared"]
    one_line(invoke(*args), "inside the input folder")
    assert files_under(tmp_path) == before


# ------------------------------------------------------------------ 5: inputs checked like a parser would
def test_truncated_zstd_input_is_one_line_not_zero_documents(tmp_path):
    import zstandard

    lines = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(2000))
    blob = zstandard.ZstdCompressor().compress(lines.encode())
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "another input"}) + "\n")
    (tmp_path / "b.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    args = ["data", "prepare", tmp_path / "a.jsonl", tmp_path / "b.jsonl.zst", "--out", tmp_path / "out"]
    one_line(invoke(*args), "b.jsonl.zst", "ends inside a zstd frame")
    assert not (tmp_path / "out").exists()


def _megatron(tmp_path: Path, damage: str) -> Path:
    from workbench.data.tokenfiles import write_megatron

    prefix = tmp_path / "mega"
    write_megatron(prefix, [np.arange(1, 40) % 250, np.arange(5, 30), np.arange(7, 99) % 250])
    idx = bytearray(Path(f"{prefix}.idx").read_bytes())
    n = struct.unpack("<Q", idx[18:26])[0]
    pointers = 34 + 4 * n
    if damage == "pointer past the end":
        idx[pointers + 16 : pointers + 24] = struct.pack("<q", 10**9)
    elif damage == "misaligned pointer":
        idx[pointers + 8 : pointers + 16] = struct.pack("<q", 77)
    elif damage == "bogus doc_idx":
        idx[pointers + 8 * n : pointers + 8 * n + 8] = struct.pack("<q", 5)
    elif damage == "lying count":
        idx[18:26] = struct.pack("<Q", 10**6)
    elif damage == "negative size":
        idx[34:38] = struct.pack("<i", -39)
    elif damage == "truncated bin":
        Path(f"{prefix}.bin").write_bytes(Path(f"{prefix}.bin").read_bytes()[:-10])
    Path(f"{prefix}.idx").write_bytes(bytes(idx))
    return Path(f"{prefix}.bin")


@pytest.mark.parametrize(
    "damage, words",
    [
        ("pointer past the end", "points at byte 1,000,000,000"),
        ("misaligned pointer", "points at byte 77"),
        ("bogus doc_idx", "doc_idx"),
        ("lying count", "holds"),
        ("negative size", "negative size"),
        ("truncated bin", "index lists"),
    ],
)
def test_damaged_megatron_index_is_one_line(tmp_path, damage, words):
    source = _megatron(tmp_path, damage)
    args = ["data", "prepare", source, "--tokenizer", "ids", "--vocab-size", "256", "--out", tmp_path / "out"]
    one_line(invoke(*args), words)


def test_intact_megatron_pair_still_reads(tmp_path):
    source = _megatron(tmp_path, "none")
    args = ["data", "prepare", source, "--tokenizer", "ids", "--vocab-size", "256", "--out", tmp_path / "out"]
    assert invoke(*args).exit_code == 0


def test_tokenizer_with_a_12kb_token_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    doc = "word " * 2400  # 12 KB
    vocab = {"</s>": 0, "[UNK]": 1, "word": 2, doc.strip(): 3}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Split("\n", "removed")
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "doc.txt").write_text(doc.strip())
    args = ["data", "prepare", tmp_path / "doc.txt", "--tokenizer", tmp_path / "tokenizer.json"]
    one_line(invoke(*args, "--out", tmp_path / "out"), "characters long")


def test_lossy_tokenizer_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.WordLevel({"</s>": 0, "[UNK]": 1, "the": 2}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "doc.txt").write_text("the cat sat on the mat\n" * 20)
    args = ["data", "prepare", tmp_path / "doc.txt", "--tokenizer", tmp_path / "tokenizer.json"]
    one_line(invoke(*args, "--out", tmp_path / "out"), "does not give back the text", "[UNK]")


def _ranks(path: Path, extra: list[str]) -> Path:
    import base64

    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)] + extra
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "extra, words",
    [
        (["YWI= 256", "YWI= 257"], "appears twice"),  # the token "ab" twice
        (["YWI= 255"], "rank 255 appears twice"),  # a duplicate rank: tiktoken's Rust core panics
        (["not-base64!! 300"], "not a `base64token rank` line"),
        (["YWI= -4"], "out of range"),
    ],
)
def test_tiktoken_rank_file_with_duplicates_is_one_line(tmp_path, extra, words):
    ranks = _ranks(tmp_path / "r.tiktoken", extra)
    (tmp_path / "doc.txt").write_text("abc abd\n" * 50)
    args = ["data", "prepare", tmp_path / "doc.txt", "--tokenizer", ranks, "--split-pattern", r"\S+|\s+"]
    one_line(invoke(*args, "--out", tmp_path / "out"), words)


def test_dangling_link_in_a_dataset_folder_is_named(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("text that is here\n" * 40)
    os.symlink(tmp_path / "gone.jsonl", folder / "b.jsonl")
    line = one_line(invoke("data", "prepare", folder, "--out", tmp_path / "out"), "dangling link")
    assert "b.jsonl" in line and "gone.jsonl" in line
