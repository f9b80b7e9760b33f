"""Logging instead of printing, the trainer's progress lines every runtime.log_every_steps, and the trainer
reading its data through data.mixtures (so annealing data of another tokenizer is refused)."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.core import logs
from workbench.core.errors import WorkbenchError

CLI = [sys.executable, "-m", "workbench.cli"]
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune.\n" * 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    from workbench.data.prepare import ensure_default_corpus

    return str(ensure_default_corpus(tmp_path_factory.mktemp("corpus") / "shakespeare-bytes"))


def _config(tmp_path: Path, corpus: str, **sections) -> dict:
    return {
        "name": "run",
        "run_dir": str(tmp_path / "run"),
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32, "vocab_size": 256},
        "data": {"sources": [{"path": corpus}], "seq_len": 32},
        "optim": {"lr_peak": 3e-3},
        "batch": {"batch_tokens": 128, "micro_batch": 4},
        "stop": {"tokens": 20 * 128},
        "eval": {"batches": 2, "batch_seqs": 4},
        "runtime": {"threads": 1},
        **sections,
    }


def test_progress_line_every_log_every_steps_and_at_the_end(tmp_path, corpus):
    config = _config(tmp_path, corpus, runtime={"threads": 1, "log_every_steps": 6})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([*CLI, "train", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[train run] ")]
    tokens = [line.split()[3] for line in lines]
    assert tokens == ["768/2,560", "1,536/2,560", "2,304/2,560", "2,560/2,560"], result.stderr  # steps 6, 12, 18, 20
    assert all(" loss " in line and line.endswith(" tok/s") for line in lines)
    assert result.stdout.startswith("completed: val_loss ")  # the command's own line is printed, on stdout


def test_trainer_refuses_annealing_data_of_another_tokenizer(tmp_path, corpus):
    from workbench.data.prepare import prepare
    from workbench.train import trainer

    text = tmp_path / "prose.txt"
    text.write_text(TEXT)
    bpe = tmp_path / "bpe"
    prepare([str(text)], bpe, tokenizer="bpe", vocab_size=280, val_fraction=0.1)
    config = _config(tmp_path, corpus)
    config["data"] |= {"anneal_sources": [{"path": str(bpe)}], "anneal_tokens": 256}
    with pytest.raises(WorkbenchError, match="anneal_sources use another tokenizer than data.sources"):
        trainer.main(config)
    run = tmp_path / "run"  # the run lock made the folder; nothing was written into it
    assert not run.exists() or not any(run.iterdir())


def test_library_lines_go_to_stderr_without_setup_and_debug_lines_need_debug():
    code = (
        "import logging, workbench; log = logging.getLogger('workbench.probe');"
        "log.info('info line'); log.debug('debug line'); log.warning('warning line')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stderr.splitlines() == ["info line", "warning line"] and result.stdout == ""


def test_cli_setup_replaces_the_handler_and_sets_the_level(capsys):
    logger = logging.getLogger(logs.LOGGER)
    saved = logger.handlers[:], logger.level
    try:
        logs.setup(debug=True)
        logs.setup(debug=True)
        assert len(logger.handlers) == 1 and logger.level == logging.DEBUG
        logging.getLogger("workbench.probe").debug("a debug line")
        assert "a debug line\n" in capsys.readouterr().err  # not a terminal: the plain line
        logs.setup(debug=False)
        assert logger.level == logging.INFO
    finally:
        logger.handlers[:], _ = saved
        logger.setLevel(saved[1])
