"""Which runs of a sweep a command uses: the current version's (workbench.sweep.versions), or all of them.

Pure: the versions come from runs/SWEEP/versions.json or the store's sweep_versions table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    """The runs a command uses: the current version's (or all, or one), and how many runs it left out."""

    sweep: str
    version: int | None  # None: the sweep has no versions (every run), or all versions were asked for
    versions: int  # how many versions the sweep has
    spec_hash: str | None
    run_ids: frozenset[str] | None  # None: every run of the sweep
    left_out: int = 0

    def describe(self) -> str:
        """One phrase: 'version 2 of 2 (spec 3f2a...); left out 6 runs of older versions (--all-versions ...)'."""
        if self.version is None:
            return f"all {self.versions} versions" if self.versions > 1 else "every run"
        text = f"version {self.version} of {self.versions} (spec {self.spec_hash})"
        if self.left_out:
            text += f"; left out {self.left_out} runs of other versions (--all-versions includes them)"
        return text

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "versions": self.versions,
            "spec_hash": self.spec_hash,
            "runs": None if self.run_ids is None else len(self.run_ids),
            "left_out": self.left_out,
        }


def scope_of(sweep: str, versions: list[dict], present: set[str], all_versions: bool = False) -> Scope:
    """The Scope of a sweep with these `versions` (versions.json's list) and `present` run ids (in the store or
    on disk): the last version's runs unless `all_versions`."""
    if all_versions or not versions:
        return Scope(sweep, None, len(versions), None, None, 0)
    current = versions[-1]
    ids = frozenset(current.get("run_ids") or [])
    return Scope(sweep, int(current["version"]), len(versions), current.get("spec_hash"), ids, len(present - ids))
