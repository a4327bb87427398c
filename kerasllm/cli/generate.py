"""`kerasllm generate`: continue a prompt with a trained model."""


def generate(args):
    from kerasllm.cli import run_folder

    model, tokenizer, _ = run_folder.load(args.model, args.tokenizer)
    print(
        model.generate(
            args.prompt, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens, greedy=args.greedy,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        )
    )
    return 0
