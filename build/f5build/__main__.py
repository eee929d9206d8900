from f5build.cli import main

raise SystemExit(main())
