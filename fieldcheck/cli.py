"""The ``fieldcheck`` console script.

    fieldcheck models pull NAME     fetch/convert/cache a model (an alias or a .gguf file)
    fieldcheck models list [FOLDER...]
                                    known aliases, whether they are cached, sizes, each model's
                                    family and the engine that will run (light cone or hooks);
                                    FOLDERs: local HF model folders to describe too
    fieldcheck models path NAME     print the cache folder of an alias
    fieldcheck report merge SHARD.json... -o RUN.json [--html RUN.html]
                                    join CI shards' reports into the run's report
                                    (fieldcheck.reports.commands; exit 3: refused)
    fieldcheck report show RUN.json [--html OUT] [--failed] [--check]
                                    print a JSON run report (fieldcheck.reports.views)
    fieldcheck report compare NEW.json BASE.json [--fail RULE]...
                                    compare two run reports as --fc-compare does (exit 1: a
                                    regression)
    fieldcheck sae train MODEL --hook HOOK | --example
                                    train a TopK SAE offline, save it in SAELens's format
    fieldcheck sae info DIR         describe a SAELens folder (fieldcheck.sae.command)

Exit codes: 0 success, 1 a fieldcheck error (the message says what to do), 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cmd_pull(args: argparse.Namespace) -> int:
    from fieldcheck.models.loading import pull

    t0 = time.perf_counter()
    folder, manifest = pull(args.name, progress=lambda m: print(m, file=sys.stderr, flush=True),
                            full=args.verify)
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"{args.name}: ready at {folder} ({_human(size)}, weights sha256 "
          f"{manifest['weights_sha256'][:16]}..., {time.perf_counter() - t0:.1f} s)")
    if manifest.get("notes"):
        print(f"note: {manifest['notes']}")
    if manifest.get("licence"):
        print(f"licence: {manifest['licence']}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from fieldcheck.models.loading import ALIASES, TINY_ARCHS, cache_state, fieldcheck_home

    from fieldcheck.errors import ModelNotAvailable
    from fieldcheck.models.info import family_and_engine
    from fieldcheck.models.loading import folder_family

    states = [cache_state(name) for name in ALIASES]  # the default first
    folders = []
    for path in args.folders:
        found = folder_family(path)
        if found is None:
            raise ModelNotAvailable(f"{path} is not a HuggingFace model folder (no readable config.json)")
        folders.append({"path": path, **found})
    tiny = {name: dict(zip(("family", "engine"), family_and_engine(
        {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}.get(arch, arch)))) for name, arch in TINY_ARCHS.items()}
    if args.json:
        print(json.dumps({"fieldcheck_home": str(fieldcheck_home()), "models": states,
                          "tiny": sorted(TINY_ARCHS), "tiny_engines": tiny, "folders": folders}, indent=1))
        return 0
    print(f"FIELDCHECK_HOME={fieldcheck_home()}")
    for s in states:
        if s["cached"]:
            state = f"cached, {_human(s['size_bytes'])}"
        elif s["problem"] and s["problem"] != "not built":
            state = f"cache unusable ({s['problem']}); `fieldcheck models pull {s['name']}` rebuilds it"
        elif s["gguf"]:
            state = f"not cached (run `fieldcheck models pull {s['name']}`)"
        else:
            state = f"package {s['package']} not installed"
        print(f"{s['name']:<16} {state}")
        print(f"{'':<16} family {s['family']} ({s['architecture']}), engine {_engine(s['engine'])}")
        print(f"{'':<16} {s['description']}; {s['notes']}")
        print(f"{'':<16} cache: {s['cache']}")
    for name in sorted(TINY_ARCHS):
        print(f"{name:<16} built in-process (random weights, for tests); family {tiny[name]['family']}, "
              f"engine {_engine(tiny[name]['engine'])}")
    for f in folders:
        print(f"{f['path']}")
        print(f"{'':<16} family {f['family']} ({f['architecture']}), engine {_engine(f['engine'])}")
    return 0


def _engine(name: str) -> str:
    return {"lightcone": "light cone (fast, exact)",
            "hooks": "hooks (generic: one hooked forward per site, autograd through the hooks)"}.get(name, name)


def _cmd_path(args: argparse.Namespace) -> int:
    from fieldcheck.errors import ModelNotAvailable
    from fieldcheck.models.loading import ALIASES, alias_cache_dir

    if args.name not in ALIASES:
        raise ModelNotAvailable(f"unknown alias {args.name!r}: known aliases are {', '.join(sorted(ALIASES))}")
    print(alias_cache_dir(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fieldcheck", description="fieldcheck: claims about language models as pytest tests")
    from fieldcheck import __version__

    p.add_argument("--version", action="version", version=f"fieldcheck {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    models = sub.add_parser("models", help="fetch, convert and list models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")

    pull = msub.add_parser("pull", help="fetch/convert/cache a model (alias or .gguf file)")
    pull.add_argument("name", help="an alias (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b) or a path to a "
                                   ".gguf file")
    pull.add_argument("--verify", action="store_true",
                      help="re-hash every cached file instead of trusting unchanged mtimes")
    pull.set_defaults(func=_cmd_pull)

    lst = msub.add_parser("list", help="known aliases, cached state, sizes, family and engine")
    lst.add_argument("folders", nargs="*", metavar="FOLDER", help="local HF model folders to describe too")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_cmd_list)

    path = msub.add_parser("path", help="print the cache folder of an alias")
    path.add_argument("name")
    path.set_defaults(func=_cmd_path)
    models.set_defaults(func=None, _parser=models)
    from fieldcheck.reports.commands import add_report_commands

    add_report_commands(sub)
    from fieldcheck.sae.command import add_parser as add_sae
    add_sae(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        (getattr(args, "_parser", None) or parser).print_help(sys.stderr)
        return 2
    from fieldcheck.errors import FieldcheckError

    try:
        return int(func(args) or 0)
    except FieldcheckError as exc:
        print(f"fieldcheck: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fieldcheck: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
