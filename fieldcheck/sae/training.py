"""Training a TopK SAE offline, on activations cached on disk.

``train(model, hook, ...)`` tokenizes a corpus (:mod:`fieldcheck.sae.corpus`) into sequences of
``context`` tokens (BOS first), caches the activations at ``hook`` (positions after BOS) in float16
shards under ``$FIELDCHECK_HOME/sae/activations/<key>/`` -- resumable: an interrupted run keeps
the shards it wrote and the next run computes only the missing ones; the key leaves out the
number of tokens and the SAE's own settings, so runs with more tokens, other sizes or other
epochs on the same model, hook and corpus reuse the shards -- loads them once for every epoch,
and trains a TopK SAE
(Gao et al. 2024: ReLU of the top-k pre-activations, unit-norm decoder rows, the AuxK loss that
revives dead latents) with Adam. Inputs are scaled by one constant so that their mean norm is
sqrt(d_in) during training; the constant is folded into the weights on the way out, so the saved
SAE reads the model's activations as they are (``normalize_activations="none"``). The quality
numbers (:mod:`fieldcheck.sae.quality`) are measured on held-out sequences and stored with it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fieldcheck.errors import UsageError
from fieldcheck.models.loading import fieldcheck_home
from fieldcheck.sae.corpus import describe, texts
from fieldcheck.sae.dictionary import Dictionary, DictionaryError
from fieldcheck.sae.quality import measure
from fieldcheck.sae.splice import check_fits, collect, site_width

SHARD_SEQS = 64  # sequences per cached shard


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does; its hash (with the model's) names the activation cache."""

    hook: str
    d_sae: int
    k: int = 32
    n_tokens: int = 200_000
    context: int = 128
    corpus: str = "pydoc"
    epochs: int = 3
    batch_size: int = 512
    lr: Optional[float] = None        # None: 2e-4 / sqrt(d_sae / 16384) (Gao et al.'s scaling)
    aux_k: Optional[int] = None       # None: d_in // 2
    aux_coef: float = 1 / 32
    dead_tokens: int = 50_000         # a latent that fired on none of the last this many tokens is dead
    eval_seqs: int = 16
    seed: int = 0

    def check(self) -> None:
        for key in ("d_sae", "k", "n_tokens", "context", "epochs", "batch_size", "eval_seqs"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{key} must be a positive int, got {v!r}")
        if self.k > self.d_sae:
            raise UsageError(f"k={self.k} must be at most d_sae={self.d_sae}")
        if self.context < 3:
            raise UsageError(f"context must be at least 3 tokens, got {self.context}")


def _model_id(model) -> str:
    info = getattr(model, "fieldcheck_info", {}) or {}
    return str(info.get("spec") or getattr(model.cfg, "model_name", "model"))


def _key(model, cfg: TrainConfig) -> str:
    info = getattr(model, "fieldcheck_info", {}) or {}
    # not n_tokens: the sequences are a prefix-stable stream, so shard i is the same for every length
    blob = json.dumps({"model": _model_id(model), "weights": info.get("weights_sha256"),
                       "hook": cfg.hook, "context": cfg.context, "corpus": cfg.corpus,
                       "seed": cfg.seed, "eval": cfg.eval_seqs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def token_sequences(model, cfg: TrainConfig) -> torch.Tensor:
    """``[n_seq, context]`` token ids of the corpus, BOS first (the model's tokenizer)."""
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    sep = tok.eos_token_id if tok.eos_token_id is not None else bos
    per = cfg.context - 1
    need = math.ceil(cfg.n_tokens / per) + cfg.eval_seqs
    stream: list[int] = []
    for doc in texts(cfg.corpus, cfg.seed):
        stream += tok(doc, add_special_tokens=False)["input_ids"] + [sep]
        if len(stream) >= need * per:
            break
    n = len(stream) // per
    if n < cfg.eval_seqs + 1:
        raise DictionaryError(f"the corpus {cfg.corpus!r} gives only {len(stream)} tokens, too few for "
                              f"{cfg.eval_seqs + 1} sequences of {cfg.context}")
    n = min(n, need)
    arr = torch.tensor(stream[:n * per], dtype=torch.long).view(n, per)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), arr], dim=1)


class ActivationCache:
    """Float16 shards of activations ``[SHARD_SEQS * (context - 1), d]`` in a folder, one ``.npy`` each."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def shard(self, i: int) -> Path:
        return self.folder / f"shard_{i:05d}.npy"

    def complete(self, i: int, rows: int) -> bool:
        """Shard i exists with ``rows`` activations (a shorter last shard of an earlier, smaller run
        does not count)."""
        try:
            return np.load(self.shard(i), mmap_mode="r").shape[0] == rows
        except (OSError, ValueError):
            return False

    def fill(self, fm, tokens: torch.Tensor, hooks: list[str], progress: bool = True, device=None) -> int:
        """Compute the missing shards of ``tokens [n_seq, context]``; returns how many were computed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        n_shards = math.ceil(tokens.shape[0] / SHARD_SEQS)
        per = tokens.shape[1] - 1
        todo = [i for i in range(n_shards)
                if not self.complete(i, per * min(SHARD_SEQS, tokens.shape[0] - i * SHARD_SEQS))]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc=f"fieldcheck sae: caching activations ({len(todo)} of {n_shards} shards)",
                       unit="shard")
        for i in todo:
            tb = tokens[i * SHARD_SEQS:(i + 1) * SHARD_SEQS].to(device)
            acts = collect(fm, tb, hooks)
            arr = torch.cat([acts[h][:, 1:].reshape(-1, acts[h].shape[-1]) for h in hooks], dim=-1)
            tmp = self.shard(i).with_suffix(".tmp.npy")
            np.save(tmp, arr.to(torch.float16).cpu().numpy())
            os.replace(tmp, self.shard(i))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return len(todo)

    def load(self, n_shards: int) -> torch.Tensor:
        return torch.cat([torch.from_numpy(np.load(self.shard(i)).astype(np.float32)) for i in range(n_shards)])


def default_out(model, cfg: TrainConfig) -> Path:
    """Where a trained SAE is cached: ``$FIELDCHECK_HOME/sae/<model>/<hook>-topk-<d_sae>-k<k>-<hash>``."""
    return cached_out(_model_id(model), cfg)


def cached_out(model_id: str, cfg: TrainConfig) -> Path:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    model_dir = str(model_id).replace("/", "_").strip(".") or "model"
    return fieldcheck_home() / "sae" / model_dir / f"{cfg.hook}-topk-{cfg.d_sae}-k{cfg.k}-{h}"


def train(model, hook: str, d_sae: Optional[int] = None, k: int = 32, n_tokens: int = 200_000, context: int = 128,
          corpus: str = "pydoc", epochs: int = 3, batch_size: int = 512, lr: Optional[float] = None,
          seed: int = 0, out=None, progress: bool = True, field=None) -> Dictionary:
    """Train (or load from the cache) a TopK SAE on ``hook`` of ``model`` and save it in SAELens's format.

    model: a model loaded by fieldcheck (``fieldcheck.load_model``). hook: a TransformerLens hook
    name (``blocks.15.hook_resid_pre``, ``blocks.3.hook_mlp_out``, ``blocks.3.attn.hook_z``).
    d_sae: latents (default 4 x the activation size). k: active latents per token. n_tokens:
    training tokens (BOS left out). context: tokens per sequence, BOS first. corpus: "pydoc"
    (default: Python's own help topics, always installed), "fortunes" (the Debian package) or a
    ``.txt`` file/folder (:func:`fieldcheck.sae.corpus.texts`). epochs: passes over the cached
    activations. batch_size: tokens per Adam step. lr: the learning rate (default 2e-4 /
    sqrt(d_sae / 16384)). seed: the corpus shuffle's and the initialisation's seed. out: the
    folder to write (default :func:`default_out`; an SAE there with the same settings is loaded,
    not retrained). progress: progress bars. field: a Field of ``model`` to reuse its functional
    forward. More settings: :class:`TrainConfig` and :func:`fit_topk`."""
    from fieldcheck.sae.saelens import CFG, load, save

    fm = _functional(model, field)
    d_in = site_width(fm, hook)
    cfg = TrainConfig(hook=hook, d_sae=int(d_sae or 4 * d_in), k=k, n_tokens=n_tokens, context=context,
                      corpus=corpus, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    cfg.check()
    folder = Path(out) if out is not None else default_out(model, cfg)
    if (folder / CFG).is_file():
        old = json.loads((folder / CFG).read_text()).get("metadata", {}).get("fieldcheck", {}).get("train")
        if old == asdict(cfg):
            return load(folder)
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    tokens = token_sequences(model, cfg)
    train_tokens, eval_tokens = tokens[cfg.eval_seqs:], tokens[:cfg.eval_seqs]
    cache = ActivationCache(fieldcheck_home() / "sae" / "activations" / _key(model, cfg))
    cache.fill(fm, train_tokens, [hook], progress, next(iter(model.parameters())).device)
    x = cache.load(math.ceil(train_tokens.shape[0] / SHARD_SEQS))[:cfg.n_tokens]
    t_cache, c_cache = time.perf_counter() - t0, time.process_time() - c0
    d, stats = fit_topk(x, cfg, progress=progress)
    d.hook_name, d.model_name = hook, _model_id(model)
    d.name = ""
    d.__post_init__()
    check_fits(d, fm)
    q = measure(d.to(device=next(iter(model.parameters())).device), fm,
                eval_tokens.to(next(iter(model.parameters())).device), model=_model_id(model))
    d.quality = q.to_dict()
    save(d, folder, {"train": asdict(cfg), "corpus": describe(cfg.corpus), "train_stats": stats,
                     "seconds": {"activations": round(t_cache, 1), "total": round(time.perf_counter() - t0, 1),
                                 "activations_cpu": round(c_cache, 1), "total_cpu": round(time.process_time() - c0, 1),
                                 "threads": torch.get_num_threads()}})
    return load(folder)


def _functional(model, field):
    if field is not None:
        return field.fm
    from fieldcheck.field.arch import UnsupportedArchitecture, functional_model
    try:
        return functional_model(model)
    except UnsupportedArchitecture:
        from fieldcheck.field.hooked import HookedFunctional
        return HookedFunctional(model)


def fit_topk(x: torch.Tensor, cfg: TrainConfig, progress: bool = True) -> tuple[Dictionary, dict]:
    """Fit a TopK SAE to activations ``x [n_tokens, d_in]`` (float32); returns it (scale folded in,
    placeholder hook ``cfg.hook``) and training statistics."""
    g = torch.Generator().manual_seed(cfg.seed)
    n, d_in = x.shape
    scale = math.sqrt(d_in) / float(x.norm(dim=-1).mean())
    xs = x * scale
    W_dec = torch.randn(cfg.d_sae, d_in, generator=g)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    params = {"W_enc": W_dec.T.clone().contiguous(), "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec,
              "b_dec": xs.mean(0).clone()}
    for p in params.values():
        p.requires_grad_(True)
    lr = cfg.lr or 2e-4 / math.sqrt(cfg.d_sae / 16384)
    opt = torch.optim.Adam(params.values(), lr=lr, betas=(0.9, 0.999))
    steps_per_epoch = n // cfg.batch_size
    total = max(1, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (total - s) / (0.2 * total)))
    aux_k = cfg.aux_k or d_in // 2
    since_fired = torch.zeros(cfg.d_sae)
    var = float(((xs - xs.mean(0)) ** 2).sum(-1).mean())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"fieldcheck sae: training d_sae={cfg.d_sae}, k={cfg.k}", unit="step")
    step, last = 0, {}
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for b in range(steps_per_epoch):
            xb = xs[perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            pre = (xb - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
            vals, idx = torch.topk(pre, cfg.k, dim=-1)
            vals = vals.relu()
            # sparse decode: only the k active rows of W_dec (forward and backward)
            rec = torch.nn.functional.embedding_bag(idx, params["W_dec"], per_sample_weights=vals,
                                                    mode="sum") + params["b_dec"]
            err = xb - rec
            mse = (err ** 2).sum(-1).mean()
            loss = mse
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            since_fired += cfg.batch_size
            since_fired[fired] = 0
            dead = since_fired > cfg.dead_tokens
            aux = torch.zeros(())
            n_dead = int(dead.sum())
            if n_dead:
                pre_dead = pre.masked_fill(~dead, -torch.inf)
                kk = min(aux_k, n_dead)
                av, ai = torch.topk(pre_dead, kk, dim=-1)
                e_hat = torch.nn.functional.embedding_bag(ai, params["W_dec"], per_sample_weights=av.relu(),
                                                          mode="sum")
                aux = ((err.detach() - e_hat) ** 2).sum(-1).mean() / var
                loss = loss + cfg.aux_coef * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                params["W_dec"].div_(params["W_dec"].norm(dim=-1, keepdim=True))
            step += 1
            last = {"fvu": float(mse.detach()) / var, "dead": n_dead / cfg.d_sae, "aux": float(aux.detach())}
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(fvu=f"{last['fvu']:.3f}", dead=f"{last['dead']:.1%}")
    if bar is not None:
        bar.close()
    with torch.no_grad():  # fold the input scale: the SAE reads raw activations
        d = Dictionary(W_enc=(params["W_enc"] * scale).detach(), b_enc=params["b_enc"].detach().clone(),
                       W_dec=(params["W_dec"] / scale).detach(), b_dec=(params["b_dec"] / scale).detach(),
                       architecture="topk", hook_name=cfg.hook, k=cfg.k, apply_b_dec_to_input=True)
    return d, {"steps": step, "lr": lr, "input_scale": scale, "final_train_fvu": last.get("fvu"),
               "final_dead_fraction": last.get("dead")}
