"""``python -m netlab.runtime.ztunnel --config PATH``: run one ztunnel until SIGTERM/SIGINT.

Access lines go to ``access_log`` (line-buffered; null = stdout), everything else to stderr.
The log level (both streams) is ``--log-level``, else ``debug`` with ``-v``, else the config's
``log_level`` (default ``info``); at ``debug`` the access log also has ``connection opened``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from netlab.errors import NetlabError
from netlab.runtime.ztunnel.accesslog import LEVELS, AccessLog
from netlab.runtime.ztunnel.config import Config
from netlab.runtime.ztunnel.server import Ztunnel

log = logging.getLogger("netlab.runtime.ztunnel")

_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


async def _main(cfg: Config, access: AccessLog) -> None:
    zt = Ztunnel(cfg, access)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, zt.stop)
    await zt.start()
    try:
        await zt.wait()
    finally:
        log.info("ztunnel %s stopping", cfg.node)
        await zt.close()


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (compiled transports and TLS: less CPU per message,
    hence lower latency), else on asyncio's own loop. ``NETLAB_ZT_LOOP=asyncio`` forces the latter."""
    if os.environ.get("NETLAB_ZT_LOOP", "") != "asyncio":
        try:
            # Imported here: uvloop is optional (a compiled extension that may be absent on
            # the host); without it ztunnel runs on asyncio's own loop.
            import uvloop
        except ImportError:
            log.debug("uvloop not installed: running on asyncio's event loop")
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab.runtime.ztunnel")
    ap.add_argument("--config", required=True, help="ztunnel config JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="same as --log-level debug")
    ap.add_argument("--log-level", choices=LEVELS, help="overrides the config's log_level (default info)")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = Config.load(args.config)
        level = args.log_level or ("debug" if args.verbose else cfg.log_level)
        logging.getLogger().setLevel(_PY_LEVELS[level])
        stream = open(cfg.access_log, "a", buffering=1, encoding="utf-8") if cfg.access_log else sys.stdout
        run(_main(cfg, AccessLog(stream, level)))
    except NetlabError as e:
        print(f"ztunnel: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"ztunnel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
