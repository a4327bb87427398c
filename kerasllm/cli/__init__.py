"""The `kerasllm` command line: `train`, `generate`, `evaluate`."""
