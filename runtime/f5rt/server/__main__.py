"""`python -m f5rt.server ...`: the same as `f5rt serve ...` (the load test starts the server this way)."""

from f5rt.server.cli import main

raise SystemExit(main())
