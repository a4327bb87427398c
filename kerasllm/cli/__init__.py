"""The `kerasllm` command line: one module per command (`train`, `generate`, `evaluate`, `distill`, `prune`,
`quantize`, `factorize`, `tune`, `export`), each reading run folders, .keras files and Hugging Face model
directories through `run_folder`."""
