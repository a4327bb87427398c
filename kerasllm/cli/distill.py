"""`kerasllm distill`: a smaller causal LM trained towards a trained teacher's logits, with `model.fit()`."""

import os
import time

import keras

from kerasllm.cli.train import build_preset_model
from kerasllm.cli.train import check_positive
from kerasllm.cli.train import check_preset
from kerasllm.cli.train import compile_for_training
from kerasllm.cli.train import finish_run
from kerasllm.cli.train import fit_exact_steps
from kerasllm.cli.train import load_corpus
from kerasllm.cli.train import print_versions
from kerasllm.cli.train import split_corpus
from kerasllm.cli.train import write_run_config


def distill(args):
    import kerasllm
    from kerasllm.cli import run_folder

    check_positive(args, ("steps", "batch_size", "seq_len", "sample_tokens", "student_layers", "top_k"))
    check_preset(args)
    if args.preset is not None and args.student_layers is not None:
        raise SystemExit(
            "kerasllm: --preset and --student-layers both choose the student; pass one of them "
            "(--preset NAME: a fresh model; --student-layers N: N of the teacher's own blocks)."
        )
    if not os.path.exists(args.teacher):
        raise SystemExit(
            f"kerasllm: no teacher at {args.teacher}. Pass --teacher RUN_FOLDER (made by `kerasllm train`), "
            "--teacher MODEL.keras with --tokenizer DIR, or --teacher a Hugging Face model directory."
        )
    run_folder.check_outside(os.path.join(args.output, args.name or ""), args.teacher, flag="--teacher",
                             option="--output/--name")
    teacher, tokenizer, config = run_folder.load(args.teacher, args.tokenizer, flag="--teacher",
                                                 dtype=args.teacher_precision)
    if not isinstance(teacher, kerasllm.models.CausalLM):
        raise SystemExit(
            f"kerasllm: the teacher is a {type(teacher).__name__}; `kerasllm distill` distils "
            "kerasllm.models.CausalLM teachers (e.g. from `kerasllm train`)."
        )
    # Defaults from the teacher's run, so that the student trains and validates on the same split.
    args.data = args.data or config.get("data")
    args.seq_len = args.seq_len or config.get("seq_len") or min(128, teacher.max_sequence_length)
    if args.validation_fraction is None:
        args.validation_fraction = config.get("validation_fraction", 0.1)
    if args.seed is None:
        args.seed = config.get("seed", 0)
    if args.seq_len > teacher.max_sequence_length:
        raise SystemExit(
            f"kerasllm: --seq-len {args.seq_len} is longer than the teacher's max_sequence_length "
            f"{teacher.max_sequence_length}; pass --seq-len {teacher.max_sequence_length} or less."
        )
    if args.student_layers is not None and args.student_layers >= teacher.num_layers:
        raise SystemExit(
            f"kerasllm: --student-layers {args.student_layers} must be below the teacher's "
            f"{teacher.num_layers} layers (a student as deep as its teacher is a copy of it)."
        )

    keras.utils.set_random_seed(args.seed)
    student_kind = f"{args.student_layers}layers" if args.student_layers else (args.preset or "tiny")
    name = args.name or f"distill-{student_kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(args.output, name)
    os.makedirs(run_dir, exist_ok=True)
    print_versions()
    print(f"teacher: {args.teacher}, CausalLM with {teacher.num_layers} layers, {teacher.count_params():,} "
          f"parameters, {teacher.dtype_policy.name}")

    text = load_corpus(args.data)
    train_data, val_data = split_corpus(text, tokenizer, args, "tokenizer: the teacher's")
    if args.student_layers:
        student = kerasllm.distillation.student_from_teacher(teacher, args.student_layers, dtype=args.precision)
        print(f"student: {args.student_layers} of the teacher's layers, {student.count_params():,} parameters, "
              f"{args.precision}")
    else:
        args.preset = args.preset or "tiny"
        student = build_preset_model(args, teacher.vocabulary_size)
    compile_for_training(student, args)
    write_run_config(run_dir, args, name)

    try:
        distillation = kerasllm.callbacks.Distillation(
            teacher, loss=args.loss, temperature=args.temperature, alpha=args.alpha, top_k=args.top_k
        )
        callbacks = [distillation, kerasllm.callbacks.TrainingLogger(run_dir, every_n_steps=1)]
        fit_exact_steps(student, train_data, val_data, args, callbacks)
    except ValueError as error:  # bad distillation settings, or a teacher the callback refuses
        raise SystemExit(f"kerasllm: {error}") from error

    teacher_results = {}
    if val_data is not None:
        teacher.compile(loss=kerasllm.losses.CausalLMLoss(), metrics=[kerasllm.metrics.Perplexity()])
        evaluated = teacher.evaluate(val_data, return_dict=True, verbose=0)
        teacher_results = {"teacher_loss": evaluated["loss"], "teacher_perplexity": evaluated["perplexity"]}
    results = finish_run(student, tokenizer, run_dir, val_data, args, extra_results=teacher_results)
    if teacher_results:
        print(f"validation perplexity: student {results['perplexity']:.2f} | "
              f"teacher {results['teacher_perplexity']:.2f}")
    return 0

