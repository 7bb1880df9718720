"""``fieldcheck report merge``: the reports of CI shards (``pytest --fc-shard K/N``) joined into the
report of the whole run, equal to the report a serial run gives (once ``timing`` is dropped).

The merge refuses, naming the reason, shards that do not belong to one run: different models
(spec or weights), seeds, settings (alpha, correction and its family, decide, dtype, device, the
comparison rules), code (fieldcheck, torch, transformers and TransformerLens versions, the git
commit, the hashes of fieldcheck's source and of the claim files), a shard missing or given
twice, or a claim file in two shards. The multiple-comparison correction and the gate rules are
then applied over the merged claims by :func:`fieldcheck.reports.assemble.assemble`, the same
function that ends a serial run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fieldcheck.errors import MergeError
from fieldcheck.reports.assemble import RunSettings, assemble
from fieldcheck.reports.compare import parse_rule
from fieldcheck.reports.schema import load_report
from fieldcheck.reports.shards import file_of

#: run metadata that must be equal across shards, by what a difference means
SETTINGS = ("seed", "alpha", "correction", "correction_family", "decide", "dtype", "device")
CODE = ("fieldcheck", "torch", "transformers", "transformer_lens", "git_commit")


def _model_id(info) -> tuple:
    """What names a model's weights: the spec and, where the model was loaded, its weights hash."""
    if not isinstance(info, dict):
        return (info, None)
    return (info.get("spec"), info.get("weights_sha256") if info.get("loaded", True) else None)


def _models(run: dict) -> list:
    return [m.get("spec") if isinstance(m, dict) else m for m in run.get("models") or []]


def _differences(a: dict, b: dict) -> list[str]:
    """Why two shard reports cannot belong to one run (empty: they can)."""
    ra, rb = a.get("run") or {}, b.get("run") or {}
    sa, sb = a["shard"], b["shard"]
    out = []
    ma, mb = _model_id(ra.get("model")), _model_id(rb.get("model"))
    if ma[0] != mb[0] or (ma[1] and mb[1] and ma[1] != mb[1]):
        out.append(f"model {ma[0]} (weights {str(ma[1])[:12]}) vs {mb[0]} (weights {str(mb[1])[:12]})")
    if _models(ra) != _models(rb):
        out.append(f"models {_models(ra)} vs {_models(rb)}")
    for m in ra.get("models") or []:          # the same spec must name the same weights
        twin = next((x for x in rb.get("models") or [] if x.get("spec") == m.get("spec")), None)
        ha, hb = _model_id(m)[1], _model_id(twin)[1] if twin else None
        if ha and hb and ha != hb:
            out.append(f"model {m.get('spec')} has weights {ha[:12]} vs {hb[:12]}")
    if ra.get("seed") != rb.get("seed"):
        out.append(f"seed {ra.get('seed')} vs {rb.get('seed')}")
    for k in SETTINGS[1:]:
        if ra.get(k) != rb.get(k):
            out.append(f"setting {k}: {ra.get(k)} vs {rb.get(k)}")
    for k in ("rules", "compare"):
        if sa.get(k) != sb.get(k):
            out.append(f"setting {'--fc-compare-fail' if k == 'rules' else '--fc-compare'}: {sa.get(k)} vs {sb.get(k)}")
    for k in CODE:
        if ra.get(k) != rb.get(k):
            out.append(f"code version {k}: {ra.get(k)} vs {rb.get(k)}")
    ca, cb = sa.get("suite") or {}, sb.get("suite") or {}
    for k, what in (("fieldcheck_sha256", "fieldcheck's source"), ("claims_sha256", "the claim files")):
        if ca.get(k) != cb.get(k):
            out.append(f"code version: {what} differ (sha256 {str(ca.get(k))[:12]} vs {str(cb.get(k))[:12]})")
    if sa.get("count") != sb.get("count"):
        out.append(f"number of shards {sa.get('count')} vs {sb.get('count')}")
    if ca.get("files") != cb.get("files"):
        out.append("the collected claim files differ (different test paths or -k/-m selections)")
    return out


def _merged_run(reports: list[dict]) -> dict:
    """The first shard's run metadata, with each model's description from a shard that loaded it."""
    run = dict(reports[0]["run"])
    loaded = {}
    for rep in reports:
        r = rep["run"]
        for info in [r.get("model")] + list(r.get("models") or []) + list((r.get("other_models") or {}).values()):
            if isinstance(info, dict) and info.get("loaded", True) and info.get("spec") is not None:
                loaded.setdefault(info["spec"], {k: v for k, v in info.items() if k != "label"})
    m = run.get("model")
    if isinstance(m, dict) and m.get("spec") in loaded:
        run["model"] = loaded[m["spec"]]
    if run.get("models"):
        run["models"] = [loaded.get(x.get("spec"), x) for x in run["models"]]
    others = {}
    for rep in reports:
        others.update((rep["run"].get("other_models") or {}))
    others = {k: loaded.get(k, v) for k, v in sorted(others.items())}
    run["other_models"] = others or None
    if run.get("baseline_model") is not None:
        spec = run["baseline_model"].get("spec") if isinstance(run["baseline_model"], dict) else run["baseline_model"]
        run["baseline_model"] = loaded.get(spec, run["baseline_model"])
    return run


def merge(reports: list[tuple[str, dict]], *, compare_with: Optional[str] = None) -> dict:
    """The report of the whole run from its shards' reports ``[(path, report), ...]``.

    ``compare_with``: the saved baseline report the shards compared with (``--fc-compare``),
    when it is not at the path the shards recorded."""
    if not reports:
        raise MergeError("no shard reports to merge: pass the JSON reports of every shard "
                         "(pytest --fc-shard K/N --fc-report-json shardK.json)")
    for path, rep in reports:
        if not isinstance(rep.get("shard"), dict):
            raise MergeError(f"{path} is not the report of a shard (it has no 'shard' member): write "
                             f"shard reports with pytest --fc-shard K/N --fc-report-json PATH")
    p0, r0 = reports[0]
    for path, rep in reports[1:]:
        why = _differences(r0, rep)
        if why:
            raise MergeError(f"refusing to merge {path} with {p0}: they come from different runs ("
                             + "; ".join(why) + "). Merge the shards of one run only.")
    n = int(r0["shard"]["count"])
    seen: dict[int, str] = {}
    for path, rep in reports:
        k = int(rep["shard"]["index"])
        if k in seen:
            raise MergeError(f"shard {k}/{n} is given twice ({seen[k]} and {path})")
        seen[k] = path
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise MergeError(f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing (have "
                         f"{', '.join(f'{k}/{n}' for k in sorted(seen))}): the merged report would "
                         f"silently lack their claims; pass every shard's report")
    owner: dict[str, str] = {}
    for path, rep in reports:
        for f in rep["shard"].get("files") or []:
            if f in owner:
                raise MergeError(f"claim file {f} is in two shards ({owner[f]} and {path}): the "
                                 f"shards were split differently (give every shard the same "
                                 f"--fc-shard-durations report, or none)")
            owner[f] = path
    suite = set((r0["shard"].get("suite") or {}).get("files") or owner)
    if set(owner) != suite:
        raise MergeError(f"the shards cover {len(owner)} of the suite's {len(suite)} claim files "
                         f"(not covered: {', '.join(sorted(suite - set(owner))[:5])})")
    claims, ids = [], {}
    for path, rep in reports:
        files = set(rep["shard"].get("files") or [])
        for c in rep["claims"]:
            if c["id"] in ids:
                raise MergeError(f"claim {c['id']} is in {ids[c['id']]} and {path}")
            if file_of(c["id"]) not in files:
                raise MergeError(f"claim {c['id']} in {path} is not in that shard's files")
            ids[c["id"]] = path
            claims.append(c)
    labels = {m.get("spec"): m.get("label", m.get("spec")) for m in r0["run"].get("models") or []}
    run = _merged_run([rep for _, rep in reports])
    sh = r0["shard"]
    saved, saved_path = None, sh.get("compare")
    if compare_with is not None or saved_path is not None:
        saved_path = compare_with or saved_path
        if not Path(saved_path).is_file():
            raise MergeError(f"the shards compared with the saved baseline {saved_path}, which is not "
                             f"here: pass its path with --compare PATH")
        saved = load_report(saved_path)
    bm = run.get("baseline_model")
    model = run.get("model")
    s = RunSettings(alpha=float(run.get("alpha", 0.05)), correction=run.get("correction", "bonferroni"),
                    family=run.get("correction_family", "file"), seed=int(run.get("seed", 0)),
                    model=model.get("spec") if isinstance(model, dict) else model,
                    baseline_model=(bm.get("spec") if isinstance(bm, dict) else bm),
                    specs=_models(run), labels=labels,
                    rules=[parse_rule(e) for e in sh.get("rules") or []],
                    saved=saved, saved_path=saved_path)
    timings = [rep.get("timing") or {} for _, rep in reports]
    timing = {
        "started": min((t.get("started") for t in timings if t.get("started")), default=None),
        "finished": max((t.get("finished") for t in timings if t.get("finished")), default=None),
        "duration_s": max((float(t.get("duration_s") or 0) for t in timings), default=0.0),
        "claims": _union(t.get("claims") for t in timings),
        "models": _union(t.get("models") for t in timings),
        "shards": [{"path": str(p), "index": int(r["shard"]["index"]),
                    "duration_s": (r.get("timing") or {}).get("duration_s")} for p, r in reports],
    }
    return assemble(claims, run, s, timing=timing)


def _union(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out.setdefault(k, v)
    return dict(sorted(out.items()))


def merge_files(paths: list[str], *, compare_with: Optional[str] = None) -> dict:
    """:func:`merge` over report files (each read with :func:`load_report`)."""
    out = []
    for p in paths:
        try:
            out.append((str(p), load_report(p)))
        except Exception as e:  # a missing or malformed file: name it
            raise MergeError(f"cannot read shard report {p}: {e}") from None
    return merge(out, compare_with=compare_with)
