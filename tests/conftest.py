"""Fixtures shared by the tests that launch sweeps, tunes and flagships through the CLI."""

import pytest


@pytest.fixture(scope="session")
def corpus_home(tmp_path_factory):
    """WORKBENCH_DATA for the session: the embedded corpus is prepared there once."""
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture
def workdir(tmp_path, monkeypatch, corpus_home):
    """A fresh working directory (runs/, fits/, the default DuckDB land here); Slurm jobs inherit it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(corpus_home))
    return tmp_path
