"""The floor: the cheapest possible Tornado JSON endpoint, served on 127.0.0.1.

Every mservices scenario is reported relative to this server's requests/s, so the ratio shows what
the service costs on top of Tornado itself on the same machine in the same run.
Usage: ``python -m bench.floor PORT``.
"""

import asyncio
import sys
from collections.abc import Sequence

import tornado.web


class StatusHandler(tornado.web.RequestHandler):
    """Answer every GET with a constant JSON document."""

    def get(self) -> None:
        """Write ``{"status": "ok"}``."""
        self.write({"status": "ok"})


def make_app() -> tornado.web.Application:
    """Build the floor application: one route, default settings."""
    return tornado.web.Application([(r"/", StatusHandler)])


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` and serve until the process is terminated."""
    app = make_app()
    app.listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the port from ``argv`` and serve forever; return 2 on a usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit() or not 0 < int(args[0]) < 65536:
        print("usage: python -m bench.floor PORT", file=sys.stderr)
        return 2
    asyncio.run(serve(int(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
