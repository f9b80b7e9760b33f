"""Fixtures shared by the tests that launch sweeps, tunes and flagships through the CLI, and the one Chromium
of the browser tests (one sync Playwright per session: a second one in the same thread refuses to start)."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium")


@pytest.fixture(autouse=True)
def away_from_the_checkout(tmp_path_factory, monkeypatch, corpus_home):
    """Every test starts in an empty directory of its own with no WORKBENCH_DB set, so that what a user's
    checkout holds (the demo's workbench.duckdb, fits/, runs/, reports/) is never read nor written by a test
    that relies on a default path (a command that picks the only sweep or fit would otherwise pick the
    user's); the embedded corpus is prepared once per session in `corpus_home`."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.delenv("WORKBENCH_DB", raising=False)
    monkeypatch.setenv("WORKBENCH_DATA", str(corpus_home))


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


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if not CHROMIUM:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("apt-get install chromium")
    from playwright.sync_api import sync_playwright

    scratch = str(tmp_path_factory.mktemp("chromium"))  # crash db + singleton dirs land here
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            timeout=30_000,
            env={**os.environ, "TMPDIR": scratch, "XDG_CONFIG_HOME": scratch},
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND"],
        )
        yield b


def load_page(ctx, html):
    """Open `html` in a new page of `ctx`, recording what went wrong on it: any request but the file itself,
    console errors, page exceptions. Returns (page, seen)."""
    page, url = ctx.new_page(), "file://" + str(html.resolve())
    seen = {"requests": [], "console": [], "exceptions": []}
    page.on("request", lambda r: r.url == url or r.url.startswith(("data:", "blob:")) or seen["requests"].append(r.url))
    page.on("console", lambda m: m.type in ("error", "assert") and seen["console"].append(m.text))
    page.on("pageerror", lambda e: seen["exceptions"].append(str(e)))
    page.goto(url, wait_until="load", timeout=15_000)
    return page, seen
