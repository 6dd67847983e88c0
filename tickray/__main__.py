"""``python -m tickray`` is the ``tickray`` console script."""

from tickray.cluster.cli import main

raise SystemExit(main())
