"""Sweep versions: which spec made which runs, so that a relaunch with another spec never mixes old and new runs.

A sweep's identity is the hash of its spec as validated (after `KEY=VALUE` overrides) over the parts that change
what is trained: model, data, grid, train (but not train.logging) and rules. The name, runs_root, launch
(where the runs execute, the cost model) and tune (the search) are left out. Every run's config records the hash
of the spec that wrote it (`meta.sweep_hash`), and runs/SWEEP/versions.json lists the versions in order, each
with its hash, spec and the run ids it plans (a run that two versions plan alike is one run, in both).

`sweep launch` with a spec whose hash differs from the current version's refuses in one line naming the changed
keys; `--new-version` appends a version (older runs stay on disk and in the store, outside the current
version), `--force` replaces the current version in place. `sweep status`, `fit` and `report` use the current
version's runs unless asked for all (workbench.store.scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.sweep.spec import UNTRAINED, SweepSpec, spec_hash, trained_spec
from workbench.train import rundir


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys of nested dicts (lists are leaves: `grid.budgets_flops` changes as one key)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, object] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    """The dotted keys whose values differ between two trained specs, in sorted order."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))


@dataclass(frozen=True)
class Decision:
    """What a launch does to the sweep's versions: the version its runs belong to, and why."""

    version: int
    spec_hash: str
    action: str  # "first" | "same" | "new" | "replaced"
    changed: tuple[str, ...] = ()
    record: dict | None = None  # versions.json to write (None: unchanged)

    def describe(self) -> str:
        keys = f" ({', '.join(self.changed)} changed)" if self.changed else ""
        return {
            "first": f"version {self.version}",
            "same": f"version {self.version}",
            "new": f"new version {self.version}{keys}",
            "replaced": f"version {self.version} replaced{keys}",
        }[self.action]


def decide(
    root: Path, spec: SweepSpec, run_ids: list[str], spec_path: str, new_version: bool, force: bool, now: str
) -> Decision:
    """The version these runs belong to; a spec that differs from the current version's is refused unless
    `new_version` (a version is appended) or `force` (the current one is replaced). Writes nothing."""
    digest = spec_hash(spec)
    body = {"spec_hash": digest, "created_at": now, "spec_path": spec_path}
    body |= {"spec": spec.model_dump(mode="json"), "run_ids": sorted(run_ids)}
    record = rundir.read_versions(root) or {"sweep": spec.name, "versions": []}
    versions = record["versions"]
    if not versions:
        return Decision(1, digest, "first", (), {**record, "versions": [{"version": 1, **body}]})
    current = versions[-1]
    if current.get("spec_hash") == digest:
        if sorted(current.get("run_ids") or []) == body["run_ids"]:
            return Decision(int(current["version"]), digest, "same")
        versions = [*versions[:-1], {**current, "run_ids": body["run_ids"]}]  # same spec, another workbench's ids
        return Decision(int(current["version"]), digest, "same", (), {**record, "versions": versions})
    old = current.get("spec") or {}
    changed = tuple(changed_keys(_trained(old), trained_spec(spec))) or ("the spec",)
    number = int(current["version"])
    if new_version:
        entry = {"version": number + 1, **body}
        return Decision(number + 1, digest, "new", changed, {**record, "versions": [*versions, entry]})
    if force:
        entry = {"version": number, **body}
        return Decision(number, digest, "replaced", changed, {**record, "versions": [*versions[:-1], entry]})
    raise WorkbenchError(
        f"sweep {spec.name} changed since version {number} was launched: {', '.join(changed)}",
        f"Relaunch with --new-version to start version {number + 1} (status, fit and report then use its runs), "
        f"--force to replace version {number}'s runs, or give the sweep another name.",
    )


def _trained(spec: dict) -> dict:
    """`trained_spec` of a spec stored as JSON in versions.json."""
    body = {k: v for k, v in spec.items() if k not in UNTRAINED}
    if isinstance(body.get("train"), dict):
        body["train"] = {k: v for k, v in body["train"].items() if k != "logging"}
    return body


def write(root: Path, decision: Decision) -> None:
    """Record the decision's versions.json (nothing when unchanged)."""
    if decision.record is not None:
        root.mkdir(parents=True, exist_ok=True)
        rundir.write_versions(root, decision.record)
