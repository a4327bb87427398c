"""`python -m kerasllm` runs the command line."""

from kerasllm.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
