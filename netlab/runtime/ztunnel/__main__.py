"""``python -m netlab.runtime.ztunnel --config PATH``: run one ztunnel until SIGTERM/SIGINT.

Access lines go to ``access_log`` (line-buffered; null = stdout), everything else to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from netlab.errors import NetlabError
from netlab.runtime.ztunnel.accesslog import AccessLog
from netlab.runtime.ztunnel.config import Config
from netlab.runtime.ztunnel.server import Ztunnel

log = logging.getLogger("netlab.runtime.ztunnel")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab.runtime.ztunnel")
    ap.add_argument("--config", required=True, help="ztunnel config JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = Config.load(args.config)
        stream = open(cfg.access_log, "a", buffering=1, encoding="utf-8") if cfg.access_log else sys.stdout
        asyncio.run(_main(cfg, AccessLog(stream)))
    except NetlabError as e:
        print(f"ztunnel: {e.message}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"ztunnel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
