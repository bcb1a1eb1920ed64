"""`python -m canary` runs the command line."""

from canary.cli import main

raise SystemExit(main())
