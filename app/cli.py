"""`lyricist serve`: run the service with uvicorn."""

from __future__ import annotations

import argparse


def add_serve_command(subcommands: argparse._SubParsersAction) -> None:
    p = subcommands.add_parser("serve", help="run the HTTP service (docs/api.md)")
    p.add_argument("--host", default=None, help="address to listen on (LYRICIST_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (LYRICIST_PORT, default 8000)")
    p.add_argument("--model", action="append", default=None, metavar="DIR",
                   help="checkpoint directory; repeat for more, the first is the default (LYRICIST_MODELS)")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    from lyricist.model import load_forward_checkpoint

    from .middleware import uvicorn_log_config
    from .server import create_app
    from .settings import Settings

    # This thread becomes the event loop: one torch thread, before its first torch work (ModelRegistry.load).
    torch.set_num_threads(1)
    settings = Settings.from_env(host=args.host, port=args.port, models=tuple(args.model) if args.model else None)
    # Every fault the lifespan would meet is reported here in one line, before the server starts.
    settings.torch_device()
    names = [load_forward_checkpoint(path).name for path in settings.models]
    if len(set(names)) < len(names):
        raise ValueError(f"two checkpoints have the same name; models are named by their directory: "
                         f"{', '.join(settings.models)}")
    # access_log=False: the app writes its own access line, as JSON (RequestLog in app/middleware.py)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=int(settings.request_timeout_s), access_log=False,
                log_config=uvicorn_log_config())
