"""``python -m bertprobe ...``: the same command line as ``bertprobe``."""

from bertprobe.cli import main

raise SystemExit(main())
