"""Entry point for ``accelerate launch run.py --mode feature --layers last4concat ...``."""

from bertprobe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
