"""``fieldcheck sae ...``: train and inspect dictionaries from the command line.

    fieldcheck sae train MODEL --hook blocks.15.hook_resid_pre [--d-sae N] [--k K] [--tokens N]
                               [--corpus pydoc|fortunes|PATH] [--out DIR] [--epochs E] [--seed S]
    fieldcheck sae train MODEL --example      the built-in model's example SAE (fieldcheck.sae.EXAMPLES)
    fieldcheck sae info DIR                    a SAELens folder's config and quality numbers
"""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    """Add the ``sae`` command to the CLI's subparsers."""
    sae = sub.add_parser("sae", help="train and inspect sparse autoencoders (SAELens format)")
    ssub = sae.add_subparsers(dest="sae_command", metavar="ACTION")
    tr = ssub.add_parser("train", help="train a TopK SAE on an offline corpus and save it in SAELens's format")
    tr.add_argument("model", help="a model spec (smollm2-135m, a folder, a .gguf file)")
    tr.add_argument("--hook", help="the hook to train on, e.g. blocks.15.hook_resid_pre")
    tr.add_argument("--example", action="store_true", help="the built-in model's example SAE (its hook and sizes)")
    tr.add_argument("--d-sae", type=int, default=None, help="latents (default 4 x the activation size)")
    tr.add_argument("--k", type=int, default=32, help="active latents per token (TopK)")
    tr.add_argument("--tokens", type=int, default=200_000, help="training tokens")
    tr.add_argument("--context", type=int, default=128, help="tokens per sequence (BOS first)")
    tr.add_argument("--epochs", type=int, default=3)
    tr.add_argument("--corpus", default="pydoc",
                    help="pydoc (Python's help topics, always there), fortunes (the Debian package), or a .txt file/folder")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None, help="output folder (default: the fieldcheck cache)")
    tr.add_argument("--json", action="store_true", help="print the quality numbers as JSON")
    tr.set_defaults(func=_cmd_train)
    info = ssub.add_parser("info", help="describe a SAELens folder")
    info.add_argument("path")
    info.set_defaults(func=_cmd_info)
    sae.set_defaults(func=None, _parser=sae)


def _cmd_train(args: argparse.Namespace) -> int:
    from fieldcheck.errors import UsageError
    from fieldcheck.models.loading import load_model
    from fieldcheck.sae.examples import EXAMPLES
    from fieldcheck.sae.training import TrainConfig, default_out, train

    if args.example == bool(args.hook):
        raise UsageError("give --hook HOOK (e.g. --hook blocks.15.hook_resid_pre) or --example, not both")
    model = load_model(args.model)
    if args.example:
        if args.model not in EXAMPLES:
            raise UsageError(f"there is no example SAE for {args.model!r}; models with one: {', '.join(EXAMPLES)}")
        kw = dict(EXAMPLES[args.model])
    else:
        kw = dict(hook=args.hook, d_sae=args.d_sae, k=args.k, n_tokens=args.tokens, context=args.context,
                  epochs=args.epochs, corpus=args.corpus, seed=args.seed)
    hook = kw.pop("hook")
    if kw.get("d_sae") is None:
        kw.pop("d_sae", None)
    d = train(model, hook, out=args.out, progress=sys.stderr.isatty(), **kw)
    where = args.out or default_out(model, TrainConfig(hook=hook, d_sae=d.d_sae, **{k: v for k, v in kw.items()
                                                                                     if k != "d_sae"}))
    if args.json:
        print(json.dumps({"path": str(where) if where else None, **d.to_dict()}, indent=1, default=str))
    else:
        print(d)
        print(f"saved in SAELens format at {where}" if where else "saved in the fieldcheck cache")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from fieldcheck.sae.saelens import load

    d = load(args.path)
    print(d)
    for k, v in d.quality.items():
        print(f"  {k}: {v}")
    return 0
