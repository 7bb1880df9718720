"""Prototype (not used by fieldcheck): LightConeEngine._run_group with preallocated buffers.

Changes against fieldcheck/engine.py, measured by benchmarks/README.md's "suggested changes":
1. the active rows live in one preallocated residual buffer ``[n_rows, T-t0, d]``; rows that join
   at a stage are copied into their slot instead of ``torch.cat``-ing the whole active set each layer;
2. keys/values go into a preallocated ``[n_rows, kv, T, d_head]`` buffer per layer (prefix gathered
   once per layer with ``index_select`` into it, new keys written after it) instead of two cats;
3. grouped-query attention without ``repeat_interleave``: queries reshaped to
   ``[row, kv, n_rep*Tq, d_head]`` against ``[row, kv, Tk, d_head]`` keys (the same dot products).
"""
from __future__ import annotations

import torch

from fieldcheck.field.engine import LightConeEngine
from fieldcheck.errors import PatchError


def attend_gqa(fm, q, k, v, pos0):
    R, H, Tq, dh = q.shape
    kv = k.shape[1]
    n_rep = H // kv
    Tk = k.shape[2]
    qg = q.reshape(R, kv, n_rep * Tq, dh)
    scores = torch.matmul(qg, k.transpose(2, 3)) * fm.attn_scale  # [R, kv, n_rep*Tq, Tk]
    qpos = torch.arange(pos0, pos0 + Tq, device=q.device).repeat(n_rep)[:, None]
    mask = torch.arange(Tk, device=q.device)[None, :] > qpos
    scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    z = torch.matmul(pattern, v).reshape(R, H, Tq, dh)
    return z.transpose(1, 2)


class ProtoEngine(LightConeEngine):
    def _run_group(self, cache, rows, t0, metric_pos):
        fm = self.fm
        L = fm.n_layers
        device = cache.resid.device
        ex_all = torch.tensor([r.example for r in rows], device=device)
        join = [r.join_stage for r in rows]
        by_stage = {}
        n_inj = 0
        for i, r in enumerate(rows):
            for inj in r.injections:
                by_stage.setdefault(inj.stage, []).append((i, inj.pos - t0, inj.head, inj.coef, inj.value))
                n_inj += 1
        applied = 0

        def apply(stage, act, n_active):
            items = by_stage.get(stage)
            if not items:
                return 0
            ii = torch.tensor([it[0] for it in items], device=device)
            if int(ii.max()) >= n_active:
                raise PatchError(f"internal: injection at stage {stage} for a row that has not joined")
            pp = torch.tensor([it[1] for it in items], device=device)
            coef = torch.tensor([it[3] for it in items], dtype=act.dtype, device=device)
            val = torch.stack([it[4] for it in items]).to(act.dtype)
            if stage % 4 == 1:
                hh = torch.tensor([it[2] for it in items], device=device)
                act[ii, pp, hh] = act[ii, pp, hh] * coef[:, None] + val
            else:
                act[ii, pp] = act[ii, pp] * coef[:, None] + val
            return len(items)

        n_rows = len(rows)
        Tq = cache.tokens.shape[1] - t0
        T = cache.tokens.shape[1]
        buf = torch.empty(n_rows, Tq, fm.d_model, dtype=cache.resid.dtype, device=device)
        kbuf = torch.empty(n_rows, fm.n_kv_heads, T, fm.d_head, dtype=cache.k.dtype, device=device)
        vbuf = torch.empty_like(kbuf)
        n_active = 0
        first = min(join)

        def join_into(stage, src):
            nonlocal n_active
            k = n_active
            while k < n_rows and join[k] == stage:
                k += 1
            if k > n_active:
                buf[n_active:k] = src[ex_all[n_active:k], t0:]
            n_active = k

        gqa = fm.n_heads != fm.n_kv_heads
        for l in range(first // 4, L):
            join_into(4 * l, cache.resid[l])
            X = buf[:n_active]
            applied += apply(4 * l, X, n_active)
            n = n_active
            if n:
                ex = ex_all[:n]
                q, k, v = fm.qkv(l, X, t0)
                if t0 > 0:
                    K, V = kbuf[:n], vbuf[:n]
                    K[:, :, :t0].copy_(cache.k[l][ex, :, :t0])
                    V[:, :, :t0].copy_(cache.v[l][ex, :, :t0])
                    K[:, :, t0:].copy_(k)
                    V[:, :, t0:].copy_(v)
                    k, v = K, V
                z = attend_gqa(fm, q, k, v, t0) if gqa else fm.attend(q, k, v, t0)
                applied += apply(4 * l + 1, z, n)
                X += fm.o_proj(l, z)  # X is now resid_mid of the active rows (in place in buf)
                self.stats["token_layers"] += n * Tq
            join_into(4 * l + 2, cache.mid[l])
            X = buf[:n_active]
            applied += apply(4 * l + 2, X, n_active)
            m = fm.mlp(l, X)
            applied += apply(4 * l + 3, m, n_active)
            X += m
        join_into(4 * L, cache.resid[L])
        X = buf[:n_active]
        applied += apply(4 * L, X, n_active)
        self.stats["forwards"] += 1
        if applied != n_inj or n_active != n_rows:
            raise PatchError(f"{n_inj - applied} of {n_inj} sources were not inserted")
        rel = metric_pos.to(device)[ex_all] - t0
        return buf[torch.arange(n_rows, device=device), rel].clone()
