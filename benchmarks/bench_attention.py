"""Benchmark: attention weights, head scores, direct logit attribution and the logit lens, against
TransformerLens's own recipes on the same inputs (one process, sides alternating).

    .venv/bin/python benchmarks/bench_attention.py [--reps N] [--n N] [--json PATH]

Workloads (SmolLM2-135M, ``fieldcheck.datasets.ioi(model, n=16, seed=0)``: 16 IOI pairs of 15 tokens):

1. attention END -> IO of all 270 heads. TransformerLens: ``model.run_with_cache(clean,
   names_filter=<hook_pattern>)`` and indexing. fieldcheck: ``field.attention(ds, "all", "END", "IO")``
   on a Field whose runs are cached (what a claim pays after any other experiment on the set) and
   on a fresh Field (its clean + corrupted runs included).
2. direct logit attribution of every head. TransformerLens: ``run_with_cache``,
   ``stack_head_results``, ``apply_ln_to_stack``, times the final norm's weight and
   ``W_U[answer] - W_U[wrong]``. fieldcheck: ``field.dla(ds)`` (every component).
3. head scores (previous-token, duplicate-token, induction) on 8 sequences of 2 x 20 random
   tokens. TransformerLens: per sequence one ``run_with_cache`` and ``detect_head`` with that
   cache for each kind. fieldcheck: ``field.head_scores(n=8, length=20)`` (one batched forward).
4. logit lens at END. TransformerLens: ``run_with_cache`` and each layer's ``hook_resid_pre``
   decoded through the HF final norm and ``lm_head`` (the model's own modules). fieldcheck:
   ``field.logit_lens(ds)``.

The last line printed is ``attention_speedup=<median ratio, cached runs> max_abs_diff=<float>``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import fieldcheck as fc
    from fieldcheck.field.arch import _raw
    from transformer_lens import head_detector as hd

    model = fc.load_model("smollm2-135m")
    ds = fc.datasets.ioi(model, n=args.n, seed=0)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    b, end, io = torch.arange(ds.n), ds.positions["END"], ds.positions["IO"]
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    hf = _raw(model.original_model)
    norm, lm_head = _raw(_raw(hf.model).norm), _raw(hf.lm_head)

    @torch.no_grad()
    def tl_attention():
        _, cache = model.run_with_cache(ds.clean_tokens, names_filter=lambda n: n in names)
        return np.stack([cache[names[l]][b, h, end, io].numpy() for l in range(L) for h in range(H)])

    @torch.no_grad()
    def tl_dla():
        _, cache = model.run_with_cache(ds.clean_tokens)
        stack = cache.stack_head_results(layer=-1, pos_slice=None)
        normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=None)[:, b, end]
        w = norm.weight
        d = (model.W_U.T[ds.answers] - model.W_U.T[ds.wrong]) * w
        return (normed * d[None]).sum(-1).numpy()

    hs_n, hs_len = 8, 20

    @torch.no_grad()
    def tl_head_scores(tokens):
        out = {k: np.zeros((L, H, hs_n)) for k in ("previous_token", "duplicate_token", "induction")}
        prompt = " x" * (tokens.shape[1] - 1)
        assert model.to_tokens(prompt).shape[-1] == tokens.shape[1]
        for i in range(hs_n):
            _, cache = model.run_with_cache(tokens[i:i + 1], remove_batch_dim=True,
                                            names_filter=lambda n: n in names)
            for k in out:
                pat = getattr(hd, f"get_{k}_head_detection_pattern")(tokens[i:i + 1])
                out[k][:, :, i] = hd.detect_head(model, prompt, pat, cache=cache).numpy()
        return out

    @torch.no_grad()
    def tl_lens():
        _, cache = model.run_with_cache(ds.clean_tokens)
        resids = [cache[f"blocks.{l}.hook_resid_pre"] for l in range(L)] + [cache["ln_final.hook_in"]]
        out = []
        for r in resids:
            logits = lm_head(norm(r[b, end]))
            out.append((logits[b, ds.answers] - logits[b, ds.wrong]).numpy())
        return np.stack(out)

    cached = fc.Field(model)
    cached.run(ds)
    rows, diffs = [], {}
    ratios = {k: [] for k in ("attention", "attention_fresh", "dla", "head_scores", "logit_lens")}
    from fieldcheck.experiments.attention import repeated_random_tokens
    toks = repeated_random_tokens(model, hs_n, hs_len, seed=0)
    for rep in range(args.reps):
        t_tl, ref = timed(tl_attention)
        t_fc, att = timed(lambda: cached.attention(ds, "all", "END", "IO"))
        t_fresh, att2 = timed(lambda: fc.Field(model).attention(ds, "all", "END", "IO"))
        diffs["attention"] = float(np.abs(att.weights - ref).max())
        ratios["attention"].append(t_tl / t_fc)
        ratios["attention_fresh"].append(t_tl / t_fresh)
        rows += [("attention", rep, "TransformerLens", t_tl), ("attention", rep, "fieldcheck (runs cached)", t_fc),
                 ("attention", rep, "fieldcheck (fresh Field)", t_fresh)]

        t_tl, ref = timed(tl_dla)
        t_fc, d = timed(lambda: cached.dla(ds, "heads"))
        diffs["dla"] = float(np.abs(d.values - ref).max())
        ratios["dla"].append(t_tl / t_fc)
        rows += [("dla", rep, "TransformerLens", t_tl), ("dla", rep, "fieldcheck (runs cached)", t_fc)]

        t_tl, ref = timed(lambda: tl_head_scores(toks))
        t_fc, hs = timed(lambda: cached.head_scores(n=hs_n, length=hs_len, seed=0, normalize="transformer_lens"))
        diffs["head_scores"] = max(float(np.abs(hs.scores[k] - ref[k]).max()) for k in ref)
        ratios["head_scores"].append(t_tl / t_fc)
        rows += [("head_scores", rep, "TransformerLens", t_tl), ("head_scores", rep, "fieldcheck", t_fc)]

        t_tl, ref = timed(tl_lens)
        t_fc, lens = timed(lambda: cached.logit_lens(ds))
        diffs["logit_lens"] = float(np.abs(lens.logit_diff - ref).max())
        ratios["logit_lens"].append(t_tl / t_fc)
        rows += [("logit_lens", rep, "TransformerLens", t_tl), ("logit_lens", rep, "fieldcheck (runs cached)", t_fc)]
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f}x" for k, v in ratios.items()), flush=True)

    print("| workload | side | median s | min s | max s |")
    print("|---|---|---|---|---|")
    for wl in ratios:
        for side in dict.fromkeys(s for w, _, s, _ in rows if w == wl.split("_fresh")[0]):
            if wl.endswith("_fresh"):
                continue
            ts = [t for w, _, s, t in rows if w == wl and s == side]
            print(f"| {wl} | {side} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} |")
    print("| workload | speedup (median of per-rep ratios) | max abs diff |")
    print("|---|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {statistics.median(v):.2f}x | {diffs.get(k.split('_fresh')[0], float('nan')):.2e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"when": datetime.now(timezone.utc).isoformat(), "python": sys.version.split()[0],
                       "torch": torch.__version__, "machine": platform.machine(), "n": ds.n,
                       "load_average": os.getloadavg(), "rows": rows,
                       "ratios": ratios, "max_abs_diff": diffs}, fh, indent=1)
    print(f"attention_speedup={statistics.median(ratios['attention']):.2f} "
          f"max_abs_diff={max(diffs.values()):.2e}")


if __name__ == "__main__":
    main()
