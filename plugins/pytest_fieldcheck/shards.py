"""``--fc-shard K/N``: this process runs the K-th of N shards of the collected claim files, and its
report carries a ``shard`` member that ``fieldcheck report merge`` checks and joins.

Whole files go to shards (:func:`fieldcheck.reports.shards.plan`: deterministic, balanced by the
durations of ``--fc-shard-durations`` or by the number of claims per file), so a correction
family of ``file`` or ``claim`` is never cut and the shard's verdicts are final. With the
``session`` family the shard's correction covers its own claims only: it is provisional, the
shard's exit status ignores it, and the merge applies the real one over every shard's claims.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from .session import FieldcheckPlugin


def plugin_sources() -> list[Path]:
    """The plugin's own source files (part of the code identity a merge checks)."""
    return sorted(Path(__file__).parent.rglob("*.py"))


def suite_files(items) -> dict[str, tuple[Path, int]]:
    """Claim file (as in node ids) -> (its path, number of collected tests), in collection order."""
    out: dict[str, tuple[Path, int]] = {}
    for it in items:
        f = it.nodeid.split("::", 1)[0]
        p, n = out.get(f, (Path(it.path), 0))
        out[f] = (p, n + 1)
    return out


def file_weights(counts: dict[str, int], durations_report: Optional[str]) -> dict[str, float]:
    """Each file's expected cost: seconds from a previous report, else claims per file."""
    from fieldcheck.reports.shards import durations_by_file, weights

    durations = None
    if durations_report is not None:
        from fieldcheck.errors import FieldcheckError
        from fieldcheck.reports.schema import load_report

        try:
            durations = durations_by_file(load_report(durations_report))
        except FieldcheckError as e:
            raise pytest.UsageError(f"--fc-shard-durations: {e}") from None
    return weights(counts, durations)


class ShardSelector:
    """Registered as ``fieldcheck-shard`` when ``--fc-shard`` is given."""

    def __init__(self, state: FieldcheckPlugin):
        self.state = state
        self.info: Optional[dict] = None

    @pytest.hookimpl(trylast=True)   # after -k/-m: the same selection in every shard
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        from fieldcheck.reports.shards import code_identity, plan

        o = self.state.opts
        k, n = o.shard
        files = suite_files(items)
        w = file_weights({f: c for f, (_, c) in files.items()}, o.shard_durations)
        mine = set(plan(w, n)[k - 1])
        keep = [it for it in items if it.nodeid.split("::", 1)[0] in mine]
        drop = [it for it in items if it.nodeid.split("::", 1)[0] not in mine]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep
        st = self.state
        self.info = {
            "index": k, "count": n, "files": sorted(mine),
            "balanced_by": None if o.shard_durations is None else str(o.shard_durations),
            "suite": {"files": sorted(files),
                      **code_identity([p for p, _ in files.values()], config.rootpath, plugin_sources())},
            "rules": list(o.compare_fail),
            "compare": None if st.baseline_path is None else str(Path(st.baseline_path).resolve()),
        }

    def provisional(self) -> bool:
        """The shard's correction is not the run's: the session family spans every shard."""
        return self.state.opts.correction_family == "session"

    def terminal_lines(self) -> list[str]:
        i = self.info or {}
        lines = [f"fieldcheck shard {i.get('index')}/{i.get('count')}: {len(i.get('files', []))} of "
                 f"{len(i.get('suite', {}).get('files', []))} claim file(s); join every shard's JSON report "
                 f"with: fieldcheck report merge shard*.json -o run.json"]
        if self.provisional():
            lines.append("fieldcheck shard: the correction over the session family is provisional here "
                         "(this shard's claims only); the merge applies it over the whole run")
        return lines


def get_selector(config) -> Optional[ShardSelector]:
    return config.pluginmanager.get_plugin("fieldcheck-shard")
