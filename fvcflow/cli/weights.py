"""``fvc weights list [--json]`` and ``fvc weights pull MODEL[=NAME]...``: pretrained weights by name.

``list`` shows, for each deep model, the named weights it knows (``torchvision:``, ``timm:``,
``hf:``, ``pytorchvideo:``, ``open_clip:``), whether each is in its library's cache, its file,
size and SHA-256. ``pull`` is the one command that uses the network: it downloads into the
library's own cache (``TORCH_HOME``, ``HF_HOME``, open_clip's ``~/.cache/clip``) with the
library's progress bar and verifies the file. ``MODEL`` alone pulls the weight the settings name
for it (``train.deep.weights.MODEL``; ``autoencoder``: stage 3's VAE,
``scale.weights``). With no network: one line naming the host, exit 2.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    """Add the ``weights`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("weights", help="list and download pretrained weights by name",
                       description="Named pretrained weights of the deep models, in each library's own "
                                   "cache. Training and predict never download: `fvc weights pull` does.")
    cmds = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="the names each deep model knows, cached or not")
    ls.add_argument("models", nargs="*", metavar="MODEL",
                    help="only these models (default: every deep model)")
    ls.add_argument("--json", action="store_true", help="one JSON list on stdout")
    ls.add_argument("--cached", action="store_true", help="only the weights in the cache")
    ls.set_defaults(func=run_list)
    pl = cmds.add_parser("pull", help="download named weights into their library's cache (network)")
    pl.add_argument("targets", nargs="+", metavar="MODEL[=NAME]",
                    help="e.g. r2plus1d_18=torchvision:KINETICS400_V1; MODEL alone: train.deep.weights.MODEL")
    pl.set_defaults(func=run_pull)


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_list(args) -> int:
    from fvcflow.models import get_model_spec, list_models
    from fvcflow.models.weights import AUTOENCODER, listing

    models = args.models or None
    if models:
        deep = set(list_models(kind="torch_video")) | {AUTOENCODER}
        for m in models:
            if m == AUTOENCODER:
                continue
            get_model_spec(m)                          # an unknown name: the registry's one-line error
            if m not in deep:
                from fvcflow.errors import FvcError

                raise FvcError(f"{m} is not a deep video model (weights are named for: "
                               f"{', '.join(sorted(deep))})")
    rows = listing(models, args.settings.train.params, autoencoder=args.settings.scale.weights)
    if args.cached:
        rows = [r for r in rows if r["cached"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "cached " if r["cached"] else "-      "
        digest = r["sha256"][:16] if r["sha256"] else "-"
        print(f"{r['model']:22s} {r['weights']:48s} {state} {_human(r['bytes']):>10s}  {digest:16s}  "
              f"{r['path']}")
    n = sum(r["cached"] for r in rows)
    print(f"{len(rows)} named weights, {n} cached; `fvc weights pull MODEL=NAME` downloads one")
    return 0


def run_pull(args) -> int:
    from fvcflow.errors import FvcError
    from fvcflow.models.weights import AUTOENCODER, is_named, pull

    settings = args.settings
    for target in args.targets:
        model, sep, value = target.partition("=")
        if not sep:
            setting = "scale.weights" if model == AUTOENCODER else f"train.deep.weights.{model}"
            value = (settings.scale.weights if model == AUTOENCODER
                     else settings.train.deep.weights.get(model, ""))
            if not is_named(value):
                raise FvcError(f"fvc weights pull {model}: {setting} names no weight "
                               f"({value or 'unset'}); give MODEL=NAME (`fvc weights list {model}`)")
        if not is_named(value):
            raise FvcError(f"fvc weights pull {target}: {value!r} is not a named weight "
                           "(library:name, see `fvc weights list`)")
        resolved = pull(model, value, settings.train.params.get(model))
        print(f"{model}\t{value}\t{resolved.path}\t{resolved.path.stat().st_size} bytes\t"
              f"sha256 {resolved.sha256}", file=sys.stdout)
    return 0
