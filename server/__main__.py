"""``python -m server`` runs the command line, like the ``mservices`` script."""

from server.cli import main

raise SystemExit(main())
