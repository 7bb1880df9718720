"""The edge graph of a model and the edge-ablation forward that circuits and discovery share.

**Graph.** Senders are the components that write into the residual stream: ``embed`` (the
embeddings, with the position embeddings where the model has them), every attention head
``L{l}.H{h}`` (its output through its slice of W_O) and every MLP ``L{l}.mlp``. Receivers are the
inputs that read it: the query, key and value inputs of every head (``L{l}.H{h}.q``/``.k``/``.v``),
every MLP's input (``L{l}.mlp``, the MLP reads its own copy of resid_mid) and ``logits`` (the final
residual). An edge ``sender->receiver`` exists when the sender is upstream of the receiver: a head
of layer l reads the input, the heads and MLPs of layers < l; the MLP of layer l also reads the
heads of layer l; the logits read every sender. Edges are position-agnostic (an edge carries its
sender's output at every position). In a grouped-query model the key and value inputs are per
query head (each head computes its own keys and values from its own input, with its group's
weights), so that every head's inputs are separate receivers as in TransformerLens's
``use_split_qkv_input``. Output biases (GPT-2's attention ``c_proj`` bias) belong to no sender and
always reach every receiver.

**Edge ablation.** A receiver sees the *current* value of the senders whose edge into it is kept
and the *ablated* value of the others:

    input(r) = bias + sum_s keep[s, r] * out_s + (1 - keep[s, r]) * ablated_s

where ``out_s`` is the sender's output in this (edge-ablated) run, computed from its own inputs,
and ``ablated_s`` its output in the ablation run (the corrupted run, the mean over the examples,
zero, or another example's run): ``input(r) = x - sum_s (1 - keep) (out_s - ablated_s)`` with ``x``
the current residual stream. Keeping every edge is exactly the model; keeping none gives every
receiver the ablation run's residual, i.e. the ablation run itself. The forward is the light-cone
engine's functional model (:mod:`fieldcheck.field.arch`: ``qkv``, ``attend``, ``o_proj``, ``mlp``),
run over all positions (an edge ablation changes the field everywhere, so no light cone is
saved); every head's queries, keys and values are computed from its own receiver inputs
(deduplicated: receivers with the same incoming edges share one computation).
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np
import torch

from fieldcheck.errors import InsufficientData, SiteError, UsageError
from fieldcheck.field.labels import canonical, unknown
from fieldcheck.field.sources import example_groups

__all__ = ["EdgeGraph", "edge_graph", "ABLATIONS"]

ABLATIONS = ("corrupt", "mean", "zero", "resample")
#: grouped mean ablation, ``fieldcheck.sources.mean(by=KEY).describe()``
MEAN_BY = re.compile(r"mean\(by=(.+)\)")


class EdgeGraph:
    """Senders, receivers and edges of a model with ``n_layers`` blocks of ``n_heads`` heads.

    Sender index: 0 = ``embed``; head (l, h) = 1 + l (H + 1) + h; MLP l = 1 + l (H + 1) + H.
    Receiver index: q/k/v of head (l, h) = l (3H + 1) + 3h + {0, 1, 2}; MLP l = l (3H + 1) + 3H;
    ``logits`` = L (3H + 1). ``adjacency`` is ``[n_senders, n_receivers]`` (True where an edge exists).
    """

    def __init__(self, n_layers: int, n_heads: int):
        L, H = int(n_layers), int(n_heads)
        self.n_layers, self.n_heads = L, H
        self.senders = ["embed"]
        for l in range(L):
            self.senders += [f"L{l}.H{h}" for h in range(H)] + [f"L{l}.mlp"]
        self.receivers = []
        for l in range(L):
            self.receivers += [f"L{l}.H{h}.{c}" for h in range(H) for c in "qkv"] + [f"L{l}.mlp"]
        self.receivers.append("logits")
        self._s_index = {n: i for i, n in enumerate(self.senders)}
        self._r_index = {n: i for i, n in enumerate(self.receivers)}
        A = np.zeros((self.n_senders, self.n_receivers), dtype=bool)
        for l in range(L):
            A[:self.heads_before(l), self.head_receivers(l)] = True
            A[:self.mlp_sender(l), self.mlp_receiver(l)] = True
        A[:, self.logits] = True
        self.adjacency = A

    # --- indices -------------------------------------------------------------------------
    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_receivers(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    @property
    def n_edges(self) -> int:
        return int(self.adjacency.sum())

    @property
    def logits(self) -> int:
        return self.n_receivers - 1

    def heads_before(self, l: int) -> int:
        """Number of senders upstream of layer ``l``'s heads (the input and all of layers < l)."""
        return 1 + l * (self.n_heads + 1)

    def head_senders(self, l: int) -> slice:
        s = self.heads_before(l)
        return slice(s, s + self.n_heads)

    def mlp_sender(self, l: int) -> int:
        return self.heads_before(l) + self.n_heads

    def head_receivers(self, l: int) -> slice:
        s = l * (3 * self.n_heads + 1)
        return slice(s, s + 3 * self.n_heads)

    def mlp_receiver(self, l: int) -> int:
        return l * (3 * self.n_heads + 1) + 3 * self.n_heads

    def sender_index(self, name: str) -> int:
        """Index of a sender label (``"embed"``, ``"L3.H2"``, ``"L3.mlp"``; the 0.1 spellings ``"input"`` and
        ``"MLP3"`` with a DeprecationWarning); SiteError listing the nearest senders otherwise."""
        key = canonical(name, "sender")
        if key not in self._s_index:
            raise unknown(name, self.senders, "sender", f"the edge graph of this model (layers 0..{self.n_layers - 1}, "
                          f"heads 0..{self.n_heads - 1}; senders are 'embed', heads 'L3.H2' and MLPs 'L3.mlp')")
        return self._s_index[key]

    def receiver_index(self, name: str) -> int:
        """Index of a receiver label (``"L3.H2.q"`` (or .k, .v), ``"L3.mlp"``, ``"logits"``); SiteError listing the
        nearest receivers otherwise."""
        key = canonical(name, "receiver")
        if key not in self._r_index:
            raise unknown(name, self.receivers, "receiver", f"the edge graph of this model (layers "
                          f"0..{self.n_layers - 1}, heads 0..{self.n_heads - 1}; receivers are head inputs "
                          "'L3.H2.q' (.k, .v), MLPs 'L3.mlp' and 'logits')")
        return self._r_index[key]

    def edge_index(self, label) -> tuple[int, int]:
        """(sender, receiver) indices of ``"sender->receiver"`` or a (sender, receiver) pair."""
        if isinstance(label, str):
            snd, _, rcv = label.partition("->")     # the graph's own spelling: no parsing
            s, r = self._s_index.get(snd), self._r_index.get(rcv)
            if s is not None and r is not None and self.adjacency[s, r]:
                return s, r
            if "->" not in label:
                raise SiteError(f"edge {label!r}: write 'sender->receiver', e.g. 'L0.H1->L2.H3.q' or 'L1.mlp->logits'")
            snd, rcv = (p.strip() for p in label.split("->", 1))
        elif isinstance(label, (tuple, list)) and len(label) == 2 and all(isinstance(x, str) for x in label):
            snd, rcv = label
        else:
            raise SiteError(f"edge {label!r}: give 'sender->receiver' or a (sender, receiver) pair of labels, "
                            "e.g. 'L0.H1->L2.H3.q' or ('MLP1', 'logits')")
        s, r = self.sender_index(snd), self.receiver_index(rcv)
        if not self.adjacency[s, r]:
            raise SiteError(f"there is no edge {snd}->{rcv}: a receiver reads only senders upstream of it "
                            "(heads of earlier layers, MLPs of earlier layers, embed; an MLP also reads its "
                            "own layer's heads)")
        return s, r

    def edge_label(self, s: int, r: int) -> str:
        return f"{self.senders[s]}->{self.receivers[r]}"

    def edges(self) -> list[tuple[int, int]]:
        """All edges as (sender, receiver) index pairs, in row-major order of the adjacency."""
        s, r = np.nonzero(self.adjacency)
        return list(zip(s.tolist(), r.tolist()))

    def node_mask(self, nodes) -> np.ndarray:
        """Edge mask ``[n_senders, n_receivers]`` of a node circuit: every edge out of a kept node
        (``embed`` is always kept)."""
        keep = np.zeros(self.n_senders, dtype=bool)
        keep[0] = True
        for n in nodes:
            if canonical(n, "node") in ("embed", "logits"):
                continue
            keep[self.sender_index(n)] = True
        return self.adjacency & keep[:, None]

    def __repr__(self) -> str:
        return (f"EdgeGraph({self.n_layers} layers x {self.n_heads} heads: {self.n_senders} senders, "
                f"{self.n_receivers} receivers, {self.n_edges} edges)")


def _check_family(fm) -> None:
    """The edge forward splits a block into per-head q/k/v and W_O slices and a sequential MLP: refuse,
    by name, the families where that split is not the model (rather than give wrong edge values)."""
    from fieldcheck.field.arch import UnsupportedArchitecture

    why = ("runs through the generic hooked path (no per-block functions)" if fm is None or getattr(fm, "generic", False)
           else "has a parallel residual (the MLP reads resid_pre)" if getattr(fm, "parallel", False)
           else None)
    if why is not None:
        raise UnsupportedArchitecture(f"edge-level circuits are not available for {getattr(fm, 'family', 'this model')}: "
                                      f"it {why}; node-level patching and path patching are")


def edge_graph(field) -> EdgeGraph:
    """The edge graph of ``field``'s model (cached on the field)."""
    _check_family(field.fm)
    g = getattr(field, "_edge_graph", None)
    if g is None or g.n_layers != field.n_layers or g.n_heads != field.n_heads:
        g = EdgeGraph(field.n_layers, field.n_heads)
        field._edge_graph = g
    return g


# --- sender values ---------------------------------------------------------------------------
def _o_bias(fm, l: int, like: torch.Tensor) -> torch.Tensor:
    """The output projection's bias ``[d_model]`` (zeros where there is none)."""
    b = fm.o_bias(l)
    return torch.zeros(fm.d_model, dtype=like.dtype, device=like.device) if b is None else b.to(like.device, like.dtype)


def sender_values(fm, cache, idx: torch.Tensor) -> torch.Tensor:
    """Every sender's output in a cached run, examples ``idx``: ``[sender, batch, pos, d_model]``.
    A head's output is its result ``z_h @ W_O[h]`` (before the post-norm of post-norm families)."""
    L = fm.n_layers
    z = cache.z[:, idx]                  # [L, B, T, H, dh]
    out = [cache.resid[0][idx][None]]
    for l in range(L):
        out.append(fm.head_results(l, z[l]))
        out.append(fm.mlp(l, cache.mid[l][idx])[None])
    return torch.cat(out)


def ablation_values(field, r, ablation: str, idx: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The ablated sender outputs ``[sender, batch, pos, d_model]`` for examples ``idx``:

    - ``"corrupt"``: the corrupted run's (patching from the corrupted run, as in MIB);
    - ``"mean"``: the mean over all examples of the clean run, per position; ``"mean(by=KEY)"``: the
      mean over the examples that share ``example_meta[KEY]`` (grouped, e.g. per template);
    - ``"zero"``: zeros (the embeddings too);
    - ``"resample"``: the clean run of another example (a fixed random derangement, ``seed``).
    """
    fm = field.fm
    if ablation == "corrupt":
        return sender_values(fm, r.corrupt, idx)
    by = MEAN_BY.fullmatch(ablation)
    if ablation == "mean" or by:
        key = (ablation, r.ds.content_hash())
        cache = getattr(field, "_edge_means", {})
        if key not in cache:
            n = r.ds.n
            groups = torch.zeros(n, dtype=torch.long) if not by else example_groups(r.ds, by.group(1))
            G = int(groups.max()) + 1
            acc = None
            for c in range(0, n, 16):
                ex = torch.arange(c, min(n, c + 16), device=idx.device)
                v = sender_values(fm, r.clean, ex)                          # [S, b, T, d]
                part = torch.zeros((G,) + v.shape[:1] + v.shape[2:], dtype=v.dtype, device=v.device)
                part.index_add_(0, groups[c:c + len(ex)].to(v.device), v.transpose(0, 1))
                acc = part if acc is None else acc + part
            counts = torch.bincount(groups, minlength=G).to(acc.dtype).to(acc.device)
            cache = {key: (acc / counts[:, None, None, None], groups)}
            field._edge_means = cache
        m, groups = cache[key]                                                # [G, S, T, d], [n]
        return m[groups[idx.cpu()].to(m.device)].transpose(0, 1)
    if ablation == "zero":
        S = 1 + fm.n_layers * (fm.n_heads + 1)
        T = r.clean.tokens.shape[1]
        return torch.zeros(S, len(idx), T, fm.d_model, dtype=r.clean.resid.dtype, device=idx.device)
    if ablation == "resample":
        perm = derangement(r.ds.n, seed).to(idx.device)
        return sender_values(fm, r.clean, perm[idx])
    raise UsageError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)} or mean(by=KEY)")


def derangement(n: int, seed: int) -> torch.Tensor:
    """A permutation of 0..n-1 without fixed points (n >= 2), drawn with ``seed``."""
    if n < 2:
        raise InsufficientData(f"resample ablation needs at least 2 examples (each takes another example's values), "
                               f"got {n}")
    g = np.random.default_rng(seed)
    while True:
        p = g.permutation(n)
        if not (p == np.arange(n)).any():
            return torch.as_tensor(p)


# --- the edge-ablated forward ----------------------------------------------------------------
def _mix(x: torch.Tensor, xa: Optional[torch.Tensor], D: torch.Tensor, K: torch.Tensor,
         post: Optional[list] = None) -> torch.Tensor:
    """Receiver inputs ``[R, B, T, d]`` for keep weights ``K [n, R]`` over the first n senders'
    deltas ``D [n, B, T, d]``: ``xa + K^T D`` (= ``x - (1 - K)^T D``), whichever is cheaper.

    ``post`` (post-norm families): ``(heads, y, Dr, norm)`` of each block upstream, whose head rows
    of ``D`` are zero; a receiver that drops some of a block's heads reads that block's attention
    output renormalized, ``norm(y - sum_h drop_h Dr_h)`` in place of ``norm(y)`` (``y`` the block's
    pre-norm sum in this run, ``Dr`` its heads' results minus their ablated results)."""
    drop = 1 - K
    live_keep = K.any(1) if K.dtype == torch.bool else (K != 0).any(1)
    live_drop = (drop != 0).any(1)
    if post or int(live_drop.sum()) <= int(live_keep.sum()):
        if not bool(live_drop.any()):
            return x[None].expand(K.shape[1], *x.shape)
        out = x[None] - torch.einsum("sr,sbtd->rbtd", drop[live_drop].to(x.dtype), D[live_drop])
        for heads, y, Dr, norm in post or ():
            dh = drop[heads].to(x.dtype)                       # [H, R]
            rows = (dh != 0).any(0)
            if bool(rows.any()):
                ymix = y[None] - torch.einsum("hr,hbtd->rbtd", dh[:, rows], Dr)
                out[rows] += norm(ymix) - norm(y)[None]
        return out
    if not bool(live_keep.any()):
        return xa[None].expand(K.shape[1], *xa.shape)
    return xa[None] + torch.einsum("sr,sbtd->rbtd", K[live_keep].to(x.dtype), D[live_keep])


def _per_head_qkv(fm, l: int, inp: torch.Tensor, q_of, k_of, v_of):
    """Queries, keys, values ``[B, H, T, dh]`` (keys and values per query head) computing only
    the head slices each input feeds: about 3 / (1 + 2 kv_heads / heads) / heads of the work of
    projecting every input for every head. For the families whose weights this module knows
    (GPT-2, Llama/Mistral, checked against ``fm.qkv`` by the tests); None for others (the
    caller then uses ``fm.qkv``)."""
    kind = type(fm).__name__
    if kind not in ("GPT2Functional", "LlamaFunctional") or fm.dispatch is not None:  # dispatched: fm.qkv
        return None
    from fieldcheck.field import arch
    H, Hkv, dh = fm.n_heads, fm.n_kv_heads, fm.d_head
    rep = H // Hkv
    U, B, T, d = inp.shape
    w = fm.blocks[l]
    hs = torch.arange(H, device=inp.device)
    if kind == "GPT2Functional":
        n = fm._ln(inp, w["ln1"])                                    # [U, B, T, d]
        W, b = w["qkv"]                                              # Conv1D: [d, 3d], [3d]
        Wh = W.view(d, 3, H, dh).permute(1, 2, 0, 3)                 # [3, H, d, dh]
        bh = b.view(3, H, dh)
        proj = [torch.einsum("hbtd,hde->hbte", n[o], Wh[i]) + bh[i][:, None, None]
                for i, o in enumerate((q_of, k_of, v_of))]
        return tuple(p.transpose(0, 1) for p in proj)               # [B, H, T, dh]
    n = arch.rms_norm(inp, w["ln1"], w["eps1"])
    Wq = w["q"].view(H, dh, d)
    Wk = w["k"].view(Hkv, dh, d)[hs // rep]
    Wv = w["v"].view(Hkv, dh, d)[hs // rep]
    q, k, v = (torch.einsum("hbtd,hed->hbte", n[o], Wx).transpose(0, 1)
               for o, Wx in ((q_of, Wq), (k_of, Wk), (v_of, Wv)))
    cos, sin = fm._cos_sin(0, T, inp)
    q = q * cos + arch.rotate_half(q) * sin
    k = k * cos + arch.rotate_half(k) * sin
    return q, k, v


def _heads_attend(fm, l: int, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                  q_of: torch.Tensor, k_of: torch.Tensor, v_of: torch.Tensor) -> torch.Tensor:
    """z ``[B, T, H, dh]`` of block ``l`` when head h reads its query from ``q_in[q_of[h]]`` (and
    keys, values likewise); the inputs are ``[U, B, T, d]`` (U distinct receiver inputs)."""
    H, Hkv = fm.n_heads, fm.n_kv_heads
    rep = H // Hkv
    if q_in.shape[0] == 1:
        q, k, v = fm.qkv(l, q_in[0], 0)
        return fm.attend(q, k, v, 0, l)
    U, B, T, d = q_in.shape
    hs = torch.arange(H, device=q_in.device)
    fast = _per_head_qkv(fm, l, q_in, q_of, k_of, v_of)
    if fast is not None:
        qs, ks, vs = fast
    else:  # any family: every head's projections from every distinct input, then pick
        q, k, v = fm.qkv(l, q_in.reshape(U * B, T, d), 0)
        q = q.view(U, B, H, T, -1)
        k = k.view(U, B, Hkv, T, -1)
        v = v.view(U, B, Hkv, T, -1)
        qs = q[q_of, :, hs].transpose(0, 1)            # [B, H, T, dh]
        ks = k[k_of, :, hs // rep].transpose(0, 1)     # [B, H, T, dh]: head h's own keys
        vs = v[v_of, :, hs // rep].transpose(0, 1)
    if rep == 1:
        return fm.attend(qs, ks, vs, 0, l)
    # fm.attend shares each key/value head between `rep` query heads; give each of the rep
    # heads of a group its own keys in its own copy of the batch, and read back its column
    Kb = torch.cat([ks[:, r::rep] for r in range(rep)])   # [rep * B, Hkv, T, dh]
    Vb = torch.cat([vs[:, r::rep] for r in range(rep)])
    zb = fm.attend(qs.repeat(rep, 1, 1, 1), Kb, Vb, 0, l).view(rep, B, T, H, -1)
    return zb[hs % rep, :, :, hs].permute(1, 2, 0, 3)      # [B, T, H, dh]


def edge_forward(fm, graph: EdgeGraph, x0: torch.Tensor, abl: torch.Tensor, keep: Optional[torch.Tensor],
                 hooks: Optional[Callable] = None, pos_keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The final residual ``[B, T, d_model]`` of the edge-ablated run from embeddings ``x0``.

    abl: ablated sender outputs ``[sender, B, T, d]``; keep: ``[sender, receiver]`` weights (1 keeps
    an edge, 0 ablates it; None keeps all). pos_keep: ``[sender, B, T]`` (optional; nodes at
    positions): a sender's output at positions where it is 0 is ablated for every receiver (the
    input sender is always kept). ``hooks(kind, l, tensor)`` (gradient mode) is called
    with every receiver input tensor (kind "heads" ``[3H, B, T, d]``, "mlp" ``[B, T, d]``,
    "logits" ``[B, T, d]``) before it is used, so that a caller can register gradient hooks;
    receiver inputs are then separate tensors even where they are equal. In post-norm families
    it is also called with each block's pre-norm attention sum (kind "attn_sum" ``[B, T, d]``).

    Post-norm families (``fm.attn_post_norm``: attn_out = norm(sum_h z_h W_O[h] + b)): a receiver
    that drops some of a block's heads reads ``norm`` of that block's sum with those heads' results
    replaced by their ablated results (renormalized for that receiver, as MIB's evaluation of
    Gemma 2 does). Keeping every edge is the model and keeping none is the ablation run, exactly;
    ablating every edge out of one head is exactly patching that head's output.
    """
    L, H = fm.n_layers, fm.n_heads
    S = graph.n_senders
    B, T, d = x0.shape
    grad_mode = hooks is not None
    post_norm = bool(getattr(fm, "attn_post_norm", False))
    if keep is None:
        keep = torch.ones(S, graph.n_receivers, dtype=x0.dtype, device=x0.device)
    keep = keep.to(x0.dtype) * torch.as_tensor(graph.adjacency, device=x0.device).to(x0.dtype)
    # D: current minus ablated output of each sender so far (not needed in gradient mode)
    D = None if grad_mode else torch.empty(S, B, T, d, dtype=x0.dtype, device=x0.device)
    post: list = []      # post-norm blocks so far: (head sender slice, y, Dr, norm)
    x = x0
    xa = abl[0]
    if D is not None:
        D[0] = x0 - abl[0]
    # A sender none of whose edges is kept may as well output its ablated value (its delta is then
    # zero): the heads of a layer, or an MLP, that no kept edge leaves are not computed at all.
    live = (keep != 0).any(1).tolist() if not grad_mode and pos_keep is None else [True] * S
    for l in range(L):
        n = graph.heads_before(l)
        hr = graph.head_receivers(l)
        hs = graph.head_senders(l)
        ms = graph.mlp_sender(l)
        heads_live = any(live[hs])
        if grad_mode:
            inp = x[None].expand(3 * H, B, T, d)
            hooks("heads", l, inp)
            idx = torch.arange(3 * H, device=x.device)
            z = _heads_attend(fm, l, inp, inp, inp, idx[0::3], idx[1::3], idx[2::3])
        elif heads_live:
            Ku, inv = torch.unique(keep[:n, hr].T, dim=0, return_inverse=True)  # distinct receivers [U, n]
            inp = _mix(x, xa, D[:n], Ku.T, post)                      # [U, B, T, d]
            z = _heads_attend(fm, l, inp, inp, inp, inv[0::3], inv[1::3], inv[2::3])
        if post_norm:
            res = fm.head_results(l, z) if heads_live else abl[hs]   # [H, B, T, d], before the norm
            if pos_keep is not None:  # a head's result outside its positions is its ablated result
                P = pos_keep[hs, :, :, None].to(x.dtype)
                res = abl[hs] + P * (res - abl[hs])
            y = res.sum(0) + _o_bias(fm, l, x)
            if grad_mode:
                hooks("attn_sum", l, y)
            x_mid = x + fm.attn_post(l, y)
            if not grad_mode:
                D[hs] = 0
                post.append((hs, y, res - abl[hs], lambda v, l=l: fm.attn_post(l, v)))
        elif heads_live:
            x_mid = x + fm.o_proj(l, z)
        else:
            x_mid = x + abl[hs].sum(0) + _o_bias(fm, l, x)
        if grad_mode:
            m_in = x_mid.clone()
            hooks("mlp", l, m_in)
            x = x_mid + fm.mlp(l, m_in)
            continue
        if not post_norm:
            D[hs] = fm.head_results(l, z) - abl[hs] if heads_live else 0
            if pos_keep is not None:  # ablated at the positions outside the node's: for every receiver
                P = pos_keep[hs, :, :, None].to(x.dtype)
                x_mid = x_mid - ((1 - P) * D[hs]).sum(0)
                D[hs] = D[hs] * P
        xa_mid = xa + abl[hs].sum(0) + _o_bias(fm, l, x)
        if live[ms]:
            m_in = _mix(x_mid, xa_mid, D[:ms], keep[:ms, graph.mlp_receiver(l)][:, None], post)[0]
            m = fm.mlp(l, m_in)
            D[ms] = m - abl[ms]
        else:
            m = abl[ms]
            D[ms] = 0
        x = x_mid + m
        if pos_keep is not None:
            P = pos_keep[ms, :, :, None].to(x.dtype)
            x = x - (1 - P) * D[ms]
            D[ms] = D[ms] * P
        xa = xa_mid + abl[ms]
    if grad_mode:
        out = x.clone()
        hooks("logits", L, out)
        return out
    return _mix(x, xa, D, keep[:, graph.logits][:, None], post)[0]
