"""Devices: a model dispatched by accelerate (a device map over the CPU and disk offload, which runs
accelerate's own dispatch hooks here) gives every experiment exactly the numbers of the same
model on one device; the hot loops make no host round trip per row or per example; CUDA (where
present) agrees with the CPU, and the engine's hot loop never synchronizes with the host."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

import fieldcheck as fc
from _precision import error, run_all
from fieldcheck.errors import DeviceError
from fieldcheck.sites import attn_head, resid_pre

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine (the CUDA tests run where there is one)")

MAPS = {
    "llama": {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu"},
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu", "transformer.h.0": "cpu",
             "transformer.h.1": "disk", "transformer.h.2": "cpu", "transformer.ln_f": "cpu", "lm_head": "cpu"},
}


@pytest.fixture(scope="module", params=sorted(MAPS))
def saved(request, tmp_path_factory):
    from fieldcheck.testing import tiny_hf_model

    folder = tmp_path_factory.mktemp(f"dispatch-{request.param}")
    hf, tok = tiny_hf_model(request.param, n_layers=3, d_model=64, n_heads=4, seed=0)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return request.param, folder


@pytest.mark.slow   # 5-18 s: make test and CI, not make test-quick
def test_dispatched_model_gives_every_experiment_exactly(saved):
    arch, folder = saved
    plain = fc.load_model(folder)
    disp = fc.load_model(folder, device_map=MAPS[arch], offload_folder=str(folder / "offload"))
    f = fc.Field(disp)
    assert f.fm.dispatch is not None and f.fm.dispatch.describe()["offloaded_blocks"] == [1]
    ref, got = run_all(plain)["values"], run_all(disp)["values"]
    errs = {k: error(got.get(k, "missing"), v) for k, v in ref.items()}
    assert all(e == 0.0 for e in errs.values()), {k: e for k, e in errs.items() if e}
    # the offloaded block's weights were on disk all along: only present while it ran
    from fieldcheck.field.dispatch import _offloaded

    assert _offloaded(f.fm.layer_modules[1]) and all(
        p.device.type == "meta" for m in _offloaded(f.fm.layer_modules[1]) for p in m.parameters(recurse=False))


def test_an_offloaded_final_norm_is_refused_by_name(saved):
    arch, folder = saved
    dm = dict(MAPS[arch], **{"model.norm" if arch == "llama" else "transformer.ln_f": "disk"})
    m = fc.load_model(folder, device_map=dm, offload_folder=str(folder / "offload2"))
    with pytest.raises(DeviceError, match="must stay on a device.*offload transformer blocks only"):
        fc.Field(m)


def test_out_of_memory_names_the_option_to_lower():
    """A real allocation failure (an impossible size) inside a chunked step and inside the
    one-off forward of a data set's runs: the error says what to lower."""
    from fieldcheck.errors import MemoryBudgetError
    from fieldcheck.field.memory import oom_hint

    with pytest.raises(MemoryBudgetError, match=r"patching a chunk .*lower the memory budget \(now 2\.0 GiB\): "
                                                r"--fc-memory-budget, or Field\(model, memory_budget=\.\.\.\), e\.g\. 512\.0 MiB"):
        with oom_hint("patching a chunk of 9 rows", 2 * 2**30):
            torch.empty(2**62, dtype=torch.uint8)
    with pytest.raises(MemoryBudgetError, match="not chunked: use fewer examples"):
        with oom_hint("running the prompts", chunked=False):
            torch.empty(2**62, dtype=torch.uint8)
    with pytest.raises(ValueError, match="not memory"):   # other errors pass through
        with oom_hint("x", 1):
            raise ValueError("not memory")


class HostReads(TorchFunctionMode):
    """Counts reads of tensor values into Python (each one a device->host sync on a GPU)."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.NAMES:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("what", ["patch", "joint patch", "sensitivity", "predict"])
def test_no_host_read_per_example_or_row(what):
    """The number of host reads of a sweep does not grow with the number of examples (rows)."""
    m = fc.load_model("tiny-llama:layers=3")
    sites = resid_pre("all", ["S2", "END"]) + attn_head(2, "all", "END")
    counts = []
    for n in (4, 16):
        f = fc.Field(m)
        ds = fc.datasets.ioi(m, n=n, seed=1)
        f.run(ds)
        f.metric_values(ds)
        f.metric_values(ds, which="corrupt")
        with HostReads() as h:
            if what == "patch":
                r = f.patch(ds, sites, progress=False)
            elif what == "joint patch":
                r = f.patch(ds, sites, jointly=True, progress=False)
            elif what == "sensitivity":
                r = f.sensitivity(ds)
            else:
                r = f.predict(ds, sites)
        assert r is not None
        counts.append(h.n)
    assert counts[1] == counts[0], counts


# --- CUDA (skipped where there is none) -----------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_agrees_with_the_cpu(dtype):
    cpu = run_all(fc.load_model("tiny-llama:layers=3", dtype=dtype))["values"]
    gpu = run_all(fc.load_model("tiny-llama:layers=3", dtype=dtype, device="cuda"))["values"]
    tol = 1e-4 if dtype == "float32" else 5e-2
    errs = {k: error(gpu.get(k, "missing"), v) for k, v in cpu.items()}
    assert all(e <= tol for e in errs.values()), errs


@needs_cuda
def test_the_engine_hot_loop_never_syncs_with_the_host():
    from fieldcheck.field.engine import LightConeEngine, Row

    m = fc.load_model("tiny-llama:layers=3", device="cuda")
    f = fc.Field(m)
    ds = fc.datasets.ioi(m, n=8, seed=1)
    r = f.run(ds)
    rows = []
    for s in resid_pre([0, 1, 2], "END").resolve(f.n_layers, f.n_heads, ds.seq_len, ds.position_names):
        injs, _ = f._injections(r, s, "denoise", fc.sources.as_source(None), 1.0)
        rows += [Row(b, [i]) for b, i in enumerate(injs) if i is not None]
    eng = LightConeEngine(f.fm)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        eng._run_group(r.corrupt, [x for x in rows if x.t0 == rows[0].t0], rows[0].t0, r.metric_pos)
    finally:
        torch.cuda.set_sync_debug_mode("default")
