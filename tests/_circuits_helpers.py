"""Helpers shared by test_circuits.py and test_discovery.py."""
from __future__ import annotations

import torch

from fieldcheck.testing import tiny_tokenizer


def tiny_gqa_llama(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, seed=0):
    """A random Llama with grouped-query attention (tiny_model's Llama has n_kv_heads = n_heads)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d_model, intermediate_size=4 * d_model,
                          num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                          max_position_embeddings=256, initializer_range=0.15, tie_word_embeddings=False,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        cfg._attn_implementation = "eager"
        hf = LlamaForCausalLM(cfg).to(torch.float64).eval()
        bridge = TransformerBridge.boot_transformers("tiny-gqa", hf_model=hf, tokenizer=tok, dtype=torch.float64)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge
