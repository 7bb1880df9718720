"""Tiny random models for tests: built in-process in well under a second, fully offline.

``tiny_model("gpt2")`` / ``tiny_model("llama")`` return a TransformerBridge around a random
GPT-2 or Llama model with a word-level tokenizer whose vocabulary holds every word of the
built-in prompt templates (``fieldcheck/data/words.json``), so the claim code that runs on
SmolLM2 runs unchanged on a tiny model. ``" Mary"`` and ``"Mary"`` both tokenize to the one
token ``Mary``; ``to_tokens`` prepends ``<bos>``.

The weights are initialized with a large std (``initializer_range=0.15``) so the random
network is visibly non-linear and its final residual moves the logits; a tiny model is
deterministic given its seed (and leaves the global torch RNG as it was).
"""
from __future__ import annotations

import functools
import json
import re
import time
from importlib import resources
from typing import Any

SPECIAL_TOKENS = ["<unk>", "<bos>", "<eos>", "<pad>"]
UNK, BOS, EOS, PAD = SPECIAL_TOKENS
TINY_N_CTX = 256
INIT_STD = 0.15

_PUNCT = list(".,;:!?'\"()[]{}-_/\\&%$#@*+=<>|`~^")

# Common English filler words so that ad-hoc prompts in tests mostly hit known tokens.
_FILLER = """
a an the and or but if then than that this these those there here where when while after
before because so to of in on at by for with from into onto over under about as up down out
off again once is are was were be been being am has have had do does did done will would can
could shall should may might must not no yes all any some each every both few many more most
other such own same very just also only even still yet too now today tomorrow yesterday
I you he she it we they me him her us them my your his its our their mine yours hers ours
theirs who whom whose which what why how one two three four five six seven eight nine ten
first second third last next new old good bad big small long short high low great little
right left early late young own sure free full true false best better worst worse
go went gone goes going come came comes coming give gave given gives giving take took taken
takes taking make made makes making get got gets getting see saw seen sees seeing know knew
known knows think thought say said says tell told ask asked put puts bring brought buy bought
find found keep kept let lets leave left like liked love loved look looked want wanted need
needed use used work worked play played run ran walk walked talk talked hand handed handing
sent send write wrote read open opened close closed call called help helped show showed
day days night week year years time times man men woman women boy girl child children friend
friends people person family home room door car road city town country world state school
water food money book story game word words name names place thing things way part side end
is capital city language official landmark located famous known called spoken speak speaks
year century number letter red blue black white yellow orange purple brown gray pink
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
June July August September October November December morning evening afternoon
""".split()


@functools.lru_cache(maxsize=1)
def _words_json() -> dict:
    return json.loads(resources.files("fieldcheck.data").joinpath("words.json").read_text())


_SPLIT = re.compile(r"\w+|[^\w\s]")


def _split(text: str) -> list[str]:
    return _SPLIT.findall(text)


@functools.lru_cache(maxsize=1)
def tiny_vocab() -> tuple[str, ...]:
    """The tiny tokenizer's vocabulary: special tokens, every word and punctuation mark of
    the built-in word lists and templates (placeholders removed), digits 0-99, fillers."""
    words = _words_json()
    seen: dict[str, None] = {t: None for t in SPECIAL_TOKENS}

    def add(text: str) -> None:
        for w in _split(text):
            seen.setdefault(w, None)
            if w.isalpha():
                seen.setdefault(w.lower(), None)
                seen.setdefault(w[:1].upper() + w[1:], None)

    placeholder = re.compile(r"\[[A-Z_]+\]")
    for key in ("names", "places", "objects", "induction_words"):
        for w in words.get(key, []):
            add(w)
    for t in words.get("ioi_templates", []):
        add(placeholder.sub(" ", t))
    rel = words.get("relations", {})
    for t in (rel.values() if isinstance(rel, dict) else rel):
        add(placeholder.sub(" ", t if isinstance(t, str) else json.dumps(t)))
    for fact in words.get("facts", []):
        for k in ("subject", "attribute"):
            if k in fact:
                add(str(fact[k]))
    # anything else in the file (lists of strings added by later issues)
    for key, value in words.items():
        if isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    add(placeholder.sub(" ", v))
    for p in _PUNCT:
        seen.setdefault(p, None)
    for i in range(100):
        seen.setdefault(str(i), None)
    for w in _FILLER:
        add(w)
    return tuple(seen)


def tiny_tokenizer(n_ctx: int = TINY_N_CTX):
    """An offline word-level ``PreTrainedTokenizerFast``: whitespace is dropped and every
    punctuation mark is its own token, so ``" Mary"`` and ``"Mary"`` are both the token
    ``Mary``. Like the SmolLM2 tokenizer it prepends ``<bos>`` (``add_bos_token=True``), so
    the bridge's ``to_tokens`` gives ``<bos>`` first and ``prepend_bos=False`` drops it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(tiny_vocab())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    # join words with spaces, no space before punctuation ("store, John")
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=n_ctx,
        clean_up_tokenization_spaces=True,
        add_bos_token=True, add_eos_token=False,
        name_or_path="fieldcheck-tiny-tokenizer",
    )
    return fast


# families tiny_hf_model builds (besides "gpt2" and "llama"): name -> transformers classes
FAMILIES = ("gpt2", "llama", "llama3", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3",
            "neox", "phi3", "olmo2")
_FAMILY_ALIASES = {"pythia": "neox", "gpt_neox": "neox", "gpt-neox": "neox", "qwen2.5": "qwen2",
                   "olmo-2": "olmo2", "phi-3": "phi3"}
# a small window so that the tiny prompts (~15 tokens) actually cross it
TINY_SLIDING_WINDOW = 6


def _family_config(arch: str, vocab_size: int, n_layers: int, d_model: int, n_heads: int, d_mlp: int,
                   n_ctx: int, init_std: float, ids: dict):
    """A transformers config for a small random model of family ``arch`` (every family-specific
    feature switched on: biases, q/k norms, soft-capping, sliding windows, partial rotary, ...)."""
    import transformers as tr

    d_head = d_model // n_heads
    kv = max(1, n_heads // 2)  # grouped-query attention where the family has it
    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                  num_hidden_layers=n_layers, num_attention_heads=n_heads,
                  max_position_embeddings=n_ctx, initializer_range=init_std, **ids)
    window_layers = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    if arch == "llama3":
        return tr.LlamaConfig(**common, num_key_value_heads=kv, rms_norm_eps=1e-5, tie_word_embeddings=False,
                              rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 8})
    if arch == "mistral":
        return tr.MistralConfig(**common, num_key_value_heads=kv, head_dim=d_head,
                                sliding_window=TINY_SLIDING_WINDOW, tie_word_embeddings=False)
    if arch == "qwen2":
        return tr.Qwen2Config(**common, num_key_value_heads=kv, tie_word_embeddings=True,
                              use_sliding_window=False)
    if arch == "qwen3":
        return tr.Qwen3Config(**common, num_key_value_heads=kv, head_dim=d_head, tie_word_embeddings=True,
                              attention_bias=False)
    if arch == "gemma":
        return tr.GemmaConfig(**common, num_key_value_heads=kv, head_dim=d_head,
                              hidden_activation="gelu_pytorch_tanh")
    if arch == "gemma2":
        return tr.Gemma2Config(**common, num_key_value_heads=kv, head_dim=d_head, query_pre_attn_scalar=d_head,
                               sliding_window=TINY_SLIDING_WINDOW, layer_types=window_layers,
                               attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                               hidden_activation="gelu_pytorch_tanh")
    if arch == "gemma3":
        return tr.Gemma3TextConfig(**common, num_key_value_heads=kv, head_dim=d_head,
                                   query_pre_attn_scalar=d_head, sliding_window=TINY_SLIDING_WINDOW,
                                   layer_types=window_layers, final_logit_softcapping=3.0,
                                   hidden_activation="gelu_pytorch_tanh")
    if arch == "neox":
        return tr.GPTNeoXConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                                num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                max_position_embeddings=n_ctx, initializer_range=init_std,
                                rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                                hidden_dropout=0.0, attention_dropout=0.0, **ids)
    if arch == "phi3":
        return tr.Phi3Config(**common, num_key_value_heads=kv, tie_word_embeddings=False,
                             partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)
    if arch == "olmo2":
        return tr.Olmo2Config(**common, num_key_value_heads=kv, tie_word_embeddings=False)
    raise AssertionError(arch)


def tiny_hf_model(arch: str = "gpt2", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                  seed: int = 0, d_mlp: int | None = None, n_ctx: int = TINY_N_CTX,
                  init_std: float = INIT_STD):
    """The plain transformers model and tokenizer that :func:`tiny_model` wraps: a random
    ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` (eager attention, float32, eval mode),
    deterministic given ``seed``. Useful to write a local model folder with
    ``save_pretrained``.

    ``arch`` may also name another family (see ``FAMILIES``): "llama3" (Llama-3 rope scaling),
    "mistral" (sliding window), "qwen2" (q/k/v biases), "qwen3" (q/k norms), "gemma", "gemma2"
    (soft-capping, post-norms, alternating sliding windows), "gemma3", "neox" (Pythia: parallel
    residual, partial rotary), "phi3" (fused projections) and "olmo2" (post-norms, q/k norms);
    grouped-query attention where the family has it, and every norm gain randomized."""
    import torch

    from fieldcheck.errors import ModelNotAvailable

    arch = str(arch).lower().removeprefix("tiny-")
    arch = _FAMILY_ALIASES.get(arch, arch)
    if arch not in FAMILIES:
        raise ModelNotAvailable(f"unknown tiny architecture {arch!r}: use one of {', '.join(FAMILIES)}")
    for name, v in (("n_layers", n_layers), ("d_model", d_model), ("n_heads", n_heads)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ModelNotAvailable(f"tiny_model: {name} must be a positive int, got {v!r}")
    if d_model % n_heads:
        raise ModelNotAvailable(
            f"tiny_model: d_model={d_model} is not divisible by n_heads={n_heads}; "
            "pick d_model a multiple of n_heads"
        )
    d_mlp = int(d_mlp or 4 * d_model)
    tok = tiny_tokenizer(n_ctx)
    vocab_size = len(tok)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)

    # fork_rng: the caller's global torch RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel

            cfg = GPT2Config(
                vocab_size=vocab_size, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers,
                n_head=n_heads, n_inner=d_mlp, initializer_range=init_std,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
            )
            cfg._attn_implementation = "eager"
            hf = GPT2LMHeadModel(cfg)
        elif arch == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM

            cfg = LlamaConfig(
                vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                num_hidden_layers=n_layers, num_attention_heads=n_heads,
                num_key_value_heads=n_heads, max_position_embeddings=n_ctx,
                initializer_range=init_std, rms_norm_eps=1e-5, tie_word_embeddings=False,
                **ids,
            )
            cfg._attn_implementation = "eager"
            hf = LlamaForCausalLM(cfg)
            # random RMSNorm gains around 1 so that the norms are not all identity
            with torch.no_grad():
                for name, p in hf.named_parameters():
                    if name.endswith("norm.weight"):
                        p.add_(torch.randn_like(p) * 0.1)
        else:
            from transformers import AutoModelForCausalLM

            cfg = _family_config(arch, vocab_size, n_layers, d_model, n_heads, d_mlp, n_ctx, init_std, ids)
            cfg._attn_implementation = "eager"
            hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
            with torch.no_grad():  # random norm gains and biases, so that none is an identity or a zero
                for name, p in hf.named_parameters():
                    if "norm" in name or "ln" in name.split(".")[-2:][0]:
                        p.add_(torch.randn_like(p) * 0.1)
                    elif name.endswith(".bias"):
                        p.add_(torch.randn_like(p) * 0.05)
    hf = hf.to(torch.float32).eval()
    return hf, tok


def _state_sha256(module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tiny_model(arch: str = "gpt2", n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
               seed: int = 0, d_mlp: int | None = None, n_ctx: int = TINY_N_CTX,
               init_std: float = INIT_STD, device: str = "cpu", dtype=None):
    """A random ``arch`` ("gpt2" or "llama") model wrapped in a TransformerBridge, in eval
    mode, gradients off (on ``device`` in ``dtype``, default the CPU and float32; the weights
    are drawn in float32 on the CPU first, so they do not depend on either). Deterministic
    given ``seed``; never touches the network. ``model.fieldcheck_info["weights_sha256"]``
    hashes the float32 weights."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    t0 = time.perf_counter()
    arch = str(arch).lower().removeprefix("tiny-")
    hf, tok = tiny_hf_model(arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, seed=seed,
                            d_mlp=d_mlp, n_ctx=n_ctx, init_std=init_std)
    d_mlp = int(d_mlp or 4 * d_model)
    weights_sha256 = _state_sha256(hf)
    dtype = torch.float32 if dtype is None else dtype
    if device != "cpu" or dtype != torch.float32:
        hf = hf.to(device=device, dtype=dtype)

    # model_name is only recorded (the hf_model and tokenizer given mean no hub access);
    # the boot draws random numbers for some architectures: keep the caller's RNG intact
    with torch.random.fork_rng(devices=[]):
        bridge = TransformerBridge.boot_transformers(
            f"fieldcheck-tiny-{arch}", hf_model=hf, tokenizer=tok, device=device, dtype=dtype,
        )
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    from fieldcheck.models.info import describe

    info = describe(bridge)
    info.update(spec=f"tiny-{arch}", source="fieldcheck.testing.tiny_model",
                tiny={"arch": arch, "n_layers": n_layers, "d_model": d_model,
                      "n_heads": n_heads, "d_mlp": d_mlp, "seed": seed, "init_std": init_std},
                weights_sha256=weights_sha256, load_seconds=round(time.perf_counter() - t0, 3))
    bridge.fieldcheck_info = info
    return bridge


__all__ = ["tiny_model", "tiny_hf_model", "FAMILIES", "tiny_tokenizer", "tiny_vocab", "write_tiny_gguf", "SPECIAL_TOKENS"]


def write_tiny_gguf(path, n_layers: int = 1, d_model: int = 32, n_heads: int = 2,
                    d_mlp: int = 64, n_ctx: int = 128, seed: int = 0) -> "Path":
    """Write a tiny random Llama model as a float32 GGUF file (a byte-level BPE vocabulary of
    256 bytes + 3 special tokens), for testing GGUF loading and the model cache offline in
    about a second. Returns the path."""
    from pathlib import Path

    import numpy as np
    from gguf import GGUFWriter
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [c for _, c in sorted(bytes_to_unicode().items())]
    tokens += ["\u0120M", "\u0120t"]  # "ĠM", "Ġt": two merges, so the file has a merges list
    vocab = len(tokens)
    w = GGUFWriter(str(path), "llama")
    w.add_name("fieldcheck-tiny-gguf")
    w.add_context_length(n_ctx)
    w.add_embedding_length(d_model)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(d_mlp)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_heads)
    w.add_rope_dimension_count(d_model // n_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    w.add_token_merges(["\u0120 M", "\u0120 t"])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)

    def t(*shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w.add_tensor("token_embd.weight", t(vocab, d_model))
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", 1 + t(d_model))
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{n}.weight", t(d_model, d_model))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + t(d_model))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(d_mlp, d_model))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(d_mlp, d_model))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(d_model, d_mlp))
    w.add_tensor("output_norm.weight", 1 + t(d_model))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
