"""Entry point for ``python -m textclf``."""

from textclf.cli import main

raise SystemExit(main())
