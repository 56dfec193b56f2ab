"""`python -m app` / `rlhf-live`: parse the options, build the service and the Gradio page, serve until Ctrl-C.

`rlhf-live serve` runs a rating front-end only and `rlhf-live train` the trainer only, on one shared database and
weights folder (app/roles.py, docs/deployment.md); with no role, everything runs in one process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.cli import parse_settings
from app.errors import StartupError
from app.settings import AppSettings

if TYPE_CHECKING:
    from app.roles import TrainerProcess
    from app.service import FeedbackService

log = logging.getLogger("app")

MAX_UPLOAD = "1kb"
ROLE_NAMES = ("serve", "train")
"""The first argument may name a role; the options are the same for each (app/settings.py)."""


def split_role(argv: Sequence[str] | None) -> tuple[str, list[str]]:
    """`["serve", "--port", "7861"]` -> `("serve", ["--port", "7861"])`; no role named -> `"all"`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ROLE_NAMES:
        return args[0], args[1:]
    return "all", args


def check_port(host: str, port: int) -> None:
    """Fail fast (before loading a model for a minute) when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to Gradio too
        try:
            sock.bind((host, port))
        except OSError as err:
            reason = err.strerror or "not available"
            raise StartupError(f"port {port} on {host} is in use ({reason}); pick another with --port") from err


def launch_options(settings: AppSettings) -> dict[str, Any]:
    """How the page is served: Gradio's `launch()` arguments (the UI tests launch with the same)."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "auth": list(settings.auth) or None,
        "share": settings.share,
        # no allowed_paths: Gradio serves an export from its own cache copy; the export folder is never served
        "max_file_size": MAX_UPLOAD,  # the page takes no uploads; Gradio's upload route would take any size
        "prevent_thread_lock": True,
        "quiet": True,
    }


def serve(service: FeedbackService, settings: AppSettings) -> None:
    """Launch the page, block until SIGINT/SIGTERM, then stop the service (checkpoint) and the server."""
    from app.ui import build_ui

    demo = build_ui(service)
    service.start()
    try:
        demo.launch(**launch_options(settings))
    except OSError as err:
        service.stop()
        raise StartupError(f"cannot serve on {settings.host}:{settings.port}: {err}") from err
    url = str(demo.share_url or demo.local_url)
    log.info("rlhf-live is running at %s (Ctrl-C stops it and saves a checkpoint)", url)
    sys.stdout.write(f"Running on {url}\n")
    admin_link = service.access.admin_link(url)
    if admin_link is not None:  # like Jupyter's token: whoever opens this link gets the training controls
        sys.stdout.write(f"Admin (keep this link private): {admin_link}\n")
    sys.stdout.flush()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            pass
    finally:
        log.info("stopping: finishing the current step and saving a checkpoint")
        service.stop()
        demo.close()


def train(settings: AppSettings) -> int:
    """`rlhf-live train`: run the trainer until SIGINT/SIGTERM (then finish the step and checkpoint); 1 if it died.
    Under torchrun / accelerate launch, one process per rank (app.distributed_trainer)."""
    from app.distributed_trainer import launch_from_env, train_ranks
    from app.roles import build_trainer_process

    launch = launch_from_env()
    if launch is not None:
        return train_ranks(settings, launch, lambda process: run_trainer(process, settings))
    return run_trainer(build_trainer_process(settings), settings)


def run_trainer(process: TrainerProcess, settings: AppSettings) -> int:
    try:
        process.start()  # a second live trainer on the database is refused here (StartupError)
    except BaseException:
        process.db.close()
        raise
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    sys.stdout.write(f"Training at version {process.publisher.version}; publishing to {settings.published_dir}\n")
    sys.stdout.flush()
    try:
        while not done.wait(1.0) and process.trainer.alive:
            pass
    finally:
        log.info("stopping: finishing the current step and saving a checkpoint")
        process.stop()
    return 1 if process.trainer.fatal is not None else 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    role, args = split_role(argv)
    settings = parse_settings(args)
    os.umask(0o077)  # the database, checkpoints and exports (raters' names and scores) are the operator's alone
    try:
        if role == "train":
            return train(settings)
        check_port(settings.host, settings.port)
        # torch and transformers: after the quick checks
        if role == "serve":
            from app.roles import build_front_end

            service = build_front_end(settings)
        else:
            from app.bootstrap import build_service

            service = build_service(settings)
        serve(service, settings)
    except StartupError as err:
        sys.stderr.write(f"rlhf-live: error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
