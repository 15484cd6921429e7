"""Runs the endpoint server in the foreground: ``python -m tuneform.serving --config <path>``.

``tuneform.serving.service.start`` launches this as a background process; run it by hand to watch the log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from tuneform.serving.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    """Serves until SIGTERM/SIGINT.

    Args:
        argv: Command-line arguments (``--config <path>``).

    Returns:
        The exit status: 0 after a clean shutdown, 1 if loading the models failed, 2 for a bad configuration.
    """
    parser = argparse.ArgumentParser(prog="python -m tuneform.serving", description=__doc__)
    parser.add_argument("--config", required=True, help="the endpoint's JSON configuration file")
    args = parser.parse_args(argv)
    os.umask(0o077)  # whatever the server writes is its owner's only
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    import uvicorn

    from tuneform.serving.app import ModelPool, create_app

    server: uvicorn.Server | None = None

    def stop_serving() -> None:
        # Loading failed: exit, so the supervisor sees a dead process and the log, not a server that never gets ready.
        if server is not None:
            server.should_exit = True

    pool = ModelPool(config, on_failure=stop_serving)
    app = create_app(config, pool)
    # A bounded graceful shutdown: SIGTERM lets a running generation finish for a few seconds, not indefinitely.
    # uvicorn's access log prints query strings as sent, and a Gemini client may send its key as `?key=`: the app's
    # own access log (tuneform.serving.app.AccessLog) masks it instead.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    endpoint = app.state.endpoint

    def reload(_signum: int, _frame: object) -> None:
        # SIGHUP (tuneform.serving.service.reload): serve the rewritten configuration without a gap, off the loop.
        threading.Thread(target=endpoint.reload, args=(args.config,), name="reload", daemon=True).start()

    signal.signal(signal.SIGHUP, reload)
    server.run()
    return 1 if pool.state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
