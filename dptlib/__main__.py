"""``python -m dptlib COMMAND [ARGS...]``: the ``dpt`` command (:mod:`dptlib.cli`) without installing it."""

from dptlib.cli import main

raise SystemExit(main())
