"""`kerasllm factorize`: a trained model's projections to two thin factors (truncated SVD), fine-tuned
for a few steps and saved next to it."""

def factorize(args):
    import kerasllm
    from kerasllm.cli.quantize import evaluate, fine_tune, load_run, print_table, save_for_inference, saved_size

    if args.steps < 0:
        raise SystemExit(f"kerasllm: --steps must be 0 (no fine-tuning) or a positive integer, got {args.steps}.")
    run = load_run(args, "model-lowrank.keras")
    model, train, validation = run["model"], run["train"], run["validation"]
    before = evaluate(model, validation)
    before_size = saved_size(model)
    try:
        small, report = kerasllm.quantization.factorize(model, rank=args.rank, energy=args.energy)
    except ValueError as error:
        raise SystemExit(f"kerasllm: {error}") from error
    factorized = evaluate(small, validation)
    rows = [("float32", before_size, report["parameters_before"], before),
            ("factorized", saved_size(small), report["parameters_after"], factorized)]
    if args.steps:
        fine_tune(small, train, args.steps, args.learning_rate)
        rows.append((f"+{args.steps} steps", None, report["parameters_after"], evaluate(small, validation)))
    size = save_for_inference(small, run["output"], run)
    if args.steps:
        rows[-1] = (rows[-1][0], size, *rows[-1][2:])
    ranks = sorted(report["ranks"].values())
    choice = f"rank {args.rank}" if args.rank else f"energy {args.energy}"
    print_table(rows, f"saved: {run['output']} ({choice}: {len(ranks)} layers factorized, ranks "
                      f"{ranks[0] if ranks else '-'}..{ranks[-1] if ranks else '-'}, {len(report['skipped'])} "
                      f"left as they were; {args.steps} fine-tuning steps)")
    return 0
