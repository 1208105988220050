"""``fvc app [--host 127.0.0.1] [--port 8050] [--token T] [--model M]``: the analyst's web page."""

from __future__ import annotations

from fvcflow.cli.options import add_model


def register(sub) -> None:
    """Add the ``app`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("app", help="a web page to upload a video and read the verdict with its evidence",
                       description="Serve a small web page (Starlette + uvicorn): upload a video, see "
                                   "P(fake) with its calibration, the verdict, the features that moved "
                                   "it, the model card's summary and the last scans. Loopback by "
                                   "default; any other host needs a token.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--token", default=None, help="required on every request (default $FVC_APP_TOKEN); "
                                                  "mandatory for a non-loopback --host")
    add_model(p)
    p.add_argument("--max-mb", type=float, default=200.0, help="largest upload in MB (default 200)")
    p.add_argument("--concurrency", type=int, default=2, help="videos scored at once; more get 'busy'")
    p.set_defaults(func=run)


def run(args) -> int:
    from fvcflow.app.web import check_start, serve
    from fvcflow.config import app_token
    from fvcflow.errors import FvcError

    token = args.token or app_token()
    check_start(args.host, token)                 # before loading anything
    if args.max_mb <= 0 or args.concurrency < 1:
        raise FvcError("--max-mb must be positive and --concurrency at least 1")
    serve(args.settings, host=args.host, port=args.port, token=token, model=args.model,
          max_bytes=int(args.max_mb * 1e6), concurrency=args.concurrency)
    return 0
