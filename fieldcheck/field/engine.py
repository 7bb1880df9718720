"""The light-cone patching engine.

A source at site (l, t) can change the field only inside its forward light cone: layers >= l and
positions >= t. The engine therefore evaluates a patch as a *row* that

1. starts from the target run's cached residual at the source's stage (no blocks before l run),
2. covers positions t..T-1 only, attending to the target run's cached keys/values for positions < t,
3. carries many rows per forward (stacked along the batch dimension, chunked by a memory budget),
4. reads the metric at one position, through only the unembedding columns it needs.

Rows whose source is exactly zero, or whose metric position lies before the source, are never run:
their effect is exactly 0. Every requested injection is counted when applied; a mismatch raises
PatchError (a patch that silently did nothing is an error, not a zero).

Stages within block l (global index ``4*l + k``): 0 resid_pre, 1 z (per head), 2 resid_mid /
attn_out, 3 mlp_out; stage ``4*L`` is the final residual. An injection sets
``act[pos] <- act[pos] * coef + value`` at its stage (``coef = 1 - alpha`` and ``value = alpha*v``
replace by v; ``coef = 1`` adds ``value``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from fieldcheck.field.arch import BlockKV, FunctionalModel
from fieldcheck.errors import MemoryBudgetError, PatchError
from fieldcheck.field.memory import oom_hint
from fieldcheck.field.precision import hook_name, nonfinite_error


@dataclass
class RunCache:
    """Activations of one run of ``B`` prompts of ``T`` tokens through ``L`` blocks.

    resid: ``[L+1, B, T, d_model]`` (resid[l] enters block l; resid[L] is the final residual)
    mid:   ``[L, B, T, d_model]``; z: ``[L, B, T, n_heads, d_head]``
    k, v:  ``[L, B, n_kv_heads, T, d_head]`` (keys after rotary where the model has it)
    """

    tokens: torch.Tensor
    resid: torch.Tensor
    mid: torch.Tensor
    z: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.mid.shape[0]


@torch.no_grad()
def run_cache(fm: FunctionalModel, tokens: torch.Tensor) -> RunCache:
    """One full forward of ``tokens [B, T]`` keeping what the engine and the response objects need.

    On a model dispatched over several devices the activations move from layer to layer as the
    model's own forward moves them; the cache is kept on the device of ``tokens`` (the home)."""
    home = tokens.device
    x = fm.embed(tokens)
    resid, mids, zs, ks, vs = [x.to(home)], [], [], [], []
    for l in range(fm.n_layers):
        x, x_mid, z, kv = fm.block(l, fm.to_layer(l, x))
        for out, t in ((resid, x), (mids, x_mid), (zs, z), (ks, kv.k), (vs, kv.v)):
            out.append(t.to(home))
    return RunCache(tokens, torch.stack(resid), torch.stack(mids), torch.stack(zs), torch.stack(ks), torch.stack(vs))


@dataclass
class Injection:
    """One source insertion in one row. ``value`` is ``[d_model]`` (``[d_head]`` at a z stage)."""

    stage: int
    pos: int
    coef: float
    value: torch.Tensor
    head: int = -1


@dataclass
class Row:
    """One patched forward of one example: the injections it carries."""

    example: int
    injections: list[Injection] = field(default_factory=list)

    @property
    def t0(self) -> int:
        return min(i.pos for i in self.injections)

    @property
    def join_stage(self) -> int:
        s = min(i.stage for i in self.injections)
        k = s % 4
        return s - k + (0 if k in (0, 1) else 2)


class LightConeEngine:
    """Evaluates rows against a target run's cache; returns the final residual at the metric position."""

    def __init__(self, fm: FunctionalModel, memory_budget: int = 2 * 2**30):
        self.fm = fm
        self.memory_budget = int(memory_budget)
        self.stats = {"rows": 0, "forwards": 0, "token_layers": 0}

    def bytes_per_row(self, T: int, length: int, itemsize: int = 4) -> int:
        """Memory one patched row of ``length`` positions (prompt length ``T``) needs at its widest
        layer: activations in the model's dtype (``itemsize`` bytes), attention scores in float32."""
        fm = self.fm
        d_mlp = getattr(fm, "d_mlp", 4 * fm.d_model)
        per_pos = (8 * fm.d_model + 3 * d_mlp + 4 * fm.n_heads * fm.d_head) * itemsize + 3 * fm.n_heads * T * 4
        return per_pos * length + 2 * fm.n_kv_heads * T * fm.d_head * itemsize

    def chunk_size(self, T: int, length: int, itemsize: int = 4) -> int:
        per_row = self.bytes_per_row(T, length, itemsize)
        n = self.memory_budget // per_row
        if n < 1:
            raise MemoryBudgetError(
                f"one patched row of {length} positions needs about {per_row / 2**20:.1f} MiB, more than the "
                f"memory budget of {self.memory_budget / 2**20:.1f} MiB; raise it to at least {per_row} bytes "
                f"(--fc-memory-budget, or Field(model, memory_budget=...)), or use shorter prompts")
        return int(n)

    @torch.no_grad()
    def run(self, cache: RunCache, rows: list[Row], metric_pos: torch.Tensor, progress=None,
            labels: Optional[list[str]] = None) -> torch.Tensor:
        """Final residual ``[len(rows), d_model]`` at each row's metric position.

        ``metric_pos`` is ``[B]``; every row must have ``t0 <= metric_pos[example]`` (the caller
        skips the others, whose effect is exactly zero). ``labels``: what each row patches, for the
        error that names a row whose residual stops being finite (half-precision overflow).
        """
        fm = self.fm
        T = cache.tokens.shape[1]
        out = torch.empty(len(rows), fm.d_model, dtype=cache.resid.dtype, device=cache.resid.device)
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(r.t0, []).append(i)
        item = cache.resid.element_size()
        for t0, idx in sorted(groups.items()):
            idx.sort(key=lambda i: rows[i].join_stage)
            size = self.chunk_size(T, T - t0, item)
            for c in range(0, len(idx), size):
                chunk = idx[c:c + size]
                with oom_hint(f"patching a chunk of {len(chunk)} rows", self.memory_budget):
                    out[chunk] = self._run_group(cache, [rows[i] for i in chunk], t0, metric_pos)
                if progress is not None:
                    progress.update(len(chunk))
        self.stats["rows"] += len(rows)
        if rows and not bool(torch.isfinite(out).all()):
            self._raise_nonfinite(cache, rows, metric_pos, out, labels)
        return out

    def _raise_nonfinite(self, cache: RunCache, rows: list[Row], metric_pos: torch.Tensor, out: torch.Tensor,
                         labels: Optional[list[str]]) -> None:
        """Rerun the first row whose result is not finite with a check after every stage, and
        raise the error that names what it patched and where its residual overflowed."""
        bad = (~torch.isfinite(out).all(-1)).nonzero().flatten().tolist()
        i = bad[0]
        found: list = []

        def watch(where: str, t: torch.Tensor) -> None:
            if not found and not bool(torch.isfinite(t).all()):
                found.append(where)
        self._run_group(cache, [rows[i]], rows[i].t0, metric_pos, watch=watch)
        what = labels[i] if labels is not None else f"a source at position {rows[i].t0}"
        raise nonfinite_error(f"the residual stream after patching {what} ({len(bad)} patched row(s) in all)",
                              found[0] if found else "the final residual", [rows[i].example], out.dtype)

    def _run_group(self, cache: RunCache, rows: list[Row], t0: int, metric_pos: torch.Tensor,
                   watch=None) -> torch.Tensor:
        """``watch(hook name, activation)``: called after every stage (None: no checks, no cost)."""
        fm = self.fm
        L = fm.n_layers
        device = cache.resid.device
        ex_all = torch.tensor([r.example for r in rows], device=device)
        join = [r.join_stage for r in rows]
        # injections grouped by stage: stage -> (row idx, rel pos, head, coef, value)
        by_stage: dict[int, list[tuple[int, int, int, float, torch.Tensor]]] = {}
        n_inj = 0
        for i, r in enumerate(rows):
            for inj in r.injections:
                by_stage.setdefault(inj.stage, []).append((i, inj.pos - t0, inj.head, inj.coef, inj.value))
                n_inj += 1
        applied = 0

        def apply(stage: int, act: torch.Tensor, n_active: int) -> int:
            items = by_stage.get(stage)
            if not items:
                return 0
            if max(it[0] for it in items) >= n_active:  # host-side: no device sync
                raise PatchError(f"internal: injection at stage {stage} for a row that has not joined")
            dev = act.device
            ii = torch.tensor([it[0] for it in items], device=dev)
            pp = torch.tensor([it[1] for it in items], device=dev)
            coef = torch.tensor([it[3] for it in items], dtype=act.dtype, device=dev)
            val = torch.stack([it[4] for it in items]).to(dev, act.dtype)
            if stage % 4 == 1:  # z: [row, pos, head, d_head]
                hh = torch.tensor([it[2] for it in items], device=dev)
                act[ii, pp, hh] = act[ii, pp, hh] * coef[:, None] + val
            else:
                act[ii, pp] = act[ii, pp] * coef[:, None] + val
            return len(items)

        n_rows = len(rows)
        first = min(join)
        X = cache.resid[0][:0, t0:].clone()  # [0, T-t0, d]
        n_active = 0

        def joiners(stage: int, src: torch.Tensor) -> torch.Tensor:
            nonlocal n_active
            k = n_active
            while k < n_rows and join[k] == stage:
                k += 1
            new = src[ex_all[n_active:k], t0:] if k > n_active else None
            n_active = k
            return new

        for l in range(first // 4, L):
            X = fm.to_layer(l, X)             # a dispatched model: on to the device of block l
            dev = X.device
            new = joiners(4 * l, cache.resid[l])
            if new is not None:
                X = torch.cat([X, new.to(dev)]) if X.shape[0] else new.to(dev, copy=True)
            applied += apply(4 * l, X, n_active)
            if watch is not None:
                watch(hook_name("resid_pre", l), X)
            if X.shape[0]:
                ex = ex_all[:X.shape[0]]
                q, k, v = fm.qkv(l, X, t0)
                if t0 > 0:
                    k = torch.cat([cache.k[l][ex, :, :t0].to(dev), k], dim=2)
                    v = torch.cat([cache.v[l][ex, :, :t0].to(dev), v], dim=2)
                z = fm.attend(q, k, v, t0, l)
                applied += apply(4 * l + 1, z, X.shape[0])
                if watch is not None:
                    watch(hook_name("z", l), z)
                X_mid = X + fm.o_proj(l, z)
                self.stats["token_layers"] += X.shape[0] * X.shape[1]
            else:
                X_mid = X
            n_before = n_active
            new = joiners(4 * l + 2, cache.mid[l])
            if new is not None:
                X_mid = torch.cat([X_mid, new.to(dev)]) if X_mid.shape[0] else new.to(dev, copy=True)
            # attn_out injections live at stage 4l+2 as residual deltas (replace semantics handled by caller)
            applied += apply(4 * l + 2, X_mid, n_active)
            if watch is not None:
                watch(hook_name("resid_mid", l), X_mid)
            if fm.parallel:  # the MLP reads resid_pre: the rows that joined at resid_mid bring theirs
                X_in = X
                if n_active > n_before:
                    pre = cache.resid[l][ex_all[n_before:n_active], t0:].to(dev)
                    X_in = torch.cat([X, pre]) if X.shape[0] else pre
                m = fm.mlp(l, X_in)
            else:
                m = fm.mlp(l, X_mid)
            applied += apply(4 * l + 3, m, X_mid.shape[0])
            if watch is not None:
                watch(hook_name("mlp_out", l), m)
            X = X_mid + m
        X = X.to(device)                      # back on the home device of the cache
        new = joiners(4 * L, cache.resid[L])
        if new is not None:
            X = torch.cat([X, new]) if X.shape[0] else new.clone()
        applied += apply(4 * L, X, n_active)
        if watch is not None:
            watch(hook_name("resid_post", L - 1), X)
        self.stats["forwards"] += 1
        if applied != n_inj or n_active != n_rows:
            raise PatchError(f"{n_inj - applied} of {n_inj} sources were not inserted "
                             f"({n_rows - n_active} rows never joined); this is a fieldcheck bug, please report it")
        rel = metric_pos.to(device)[ex_all] - t0
        return X[torch.arange(n_rows, device=device), rel]
