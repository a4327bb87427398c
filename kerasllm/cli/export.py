"""`kerasllm export`: a trained model and its tokenizer in another format (so far: a transformers checkpoint)."""

import json
import os


def export(args):
    from kerasllm.cli import run_folder

    output = os.path.abspath(args.output)
    model_path = os.path.abspath(args.model)
    run_folder.check_outside(args.output, args.model)
    # The folder (or file) of the input model inside --output would be replaced with it.
    if os.path.exists(model_path) and run_folder.is_inside(model_path, output):
        raise SystemExit(
            f"kerasllm: --output {args.output} holds the --model {args.model} itself; choose a new folder for the "
            "export (e.g. <run>/transformers)."
        )
    if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
        raise SystemExit(
            f"kerasllm: --output {args.output} exists and is not empty; pass --overwrite to replace its contents, "
            "or choose a new folder."
        )
    model, tokenizer, _ = run_folder.load(args.model, args.tokenizer, causal=False)
    try:
        model.export_to_transformers(args.output, tokenizer=tokenizer, dtype=args.dtype, model_type=args.model_type,
                                     max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    except (ValueError, NotImplementedError, OSError) as error:
        raise SystemExit(f"kerasllm: export --model {args.model}: {run_folder.one_line(error)}") from error
    print_written(args.output)
    return 0


def print_written(directory):
    """The files of the exported folder with their sizes, the total, and the family and dtype written."""
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    names = sorted(os.listdir(directory))
    sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in names}
    for name in names:
        print(f"  {name:<40}{_size(sizes[name]):>12}")
    architectures = ", ".join(config.get("architectures") or [])
    print(f"exported: {directory} (transformers, model_type {config.get('model_type')}"
          f"{f' ({architectures})' if architectures else ''}, {config.get('torch_dtype') or config.get('dtype')}, "
          f"{len(names)} files, {_size(sum(sizes.values()))})")


def _size(size):
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024

