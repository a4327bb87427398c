"""Every documented public name exists: names in the docs and the issues are promises to users."""

import pathlib
import re

import kerasllm

PUBLIC = {
    "models": ["CausalLM", "MaskedLM", "SequenceClassifier", "TransformerBackbone"],
    "layers": ["TokenEmbedding", "PositionEmbedding", "RotaryEmbedding", "SelfAttention", "FeedForward",
               "DecoderBlock", "EncoderBlock", "LayerNormalization", "RMSNormalization", "RMSNormalizationPlusOne",
               "LowRankDense"],
    "losses": ["CausalLMLoss", "MaskedLMLoss", "sparse_cross_entropy", "IGNORE_INDEX", "DistillationLoss",
               "distillation"],
    "metrics": ["Perplexity", "MaskedAccuracy", "bleu", "BLEU", "rouge_n", "rouge_l", "ROUGE"],
    "tokenizers": ["HuggingFaceTokenizer", "Tokenizer", "BytePairTokenizer", "CharacterTokenizer", "load"],
    "data": ["load_text", "LanguageModelingDataset", "language_modeling_splits", "pack_documents", "pad_sequences",
             "mask_tokens", "MaskedLanguageModelingDataset", "masked_language_modeling_splits", "IGNORE_INDEX",
             "ReplayDataset", "MixtureDataset", "few_shot_prompt"],
    "datasets": ["shakespeare", "shakespeare_plays", "shakespeare_genre", "GENRE_LABELS"],
    "optimizers": ["AdamW", "WarmupCosineDecay", "create_optimizer", "scale_learning_rates", "layer_decay_multipliers"],
    "callbacks": ["TrainingLogger", "Distillation", "Checkpoint", "CheckpointError", "NonFiniteGuard", "Pruning",
                  "QuantizationAwareTraining", "ElasticWeightConsolidation"],
    "distillation": ["TeacherLogitsCache", "cache_teacher_logits", "student_from_teacher"],
    "quantization": ["quantize", "convert", "fake_quantize_int8_weight", "fake_quantize_int8_input",
                     "fake_quantize_int4_weight", "strip_pruning", "factorize", "fake_quantize_int8_static",
                     "MinMaxObserver", "MovingAverageMinMaxObserver"],
    "tuning": ["SearchSpace", "CausalLMHyperModel", "search"],
    "distribution": ["get_layout_map", "auto_layout_map", "check_layout_map", "data_parallel", "model_parallel",
                     "check_batch_size", "mirrored_strategy", "init_process_group", "torch_data_parallel",
                     "TorchDataParallel"],
}


def test_public_names_exist_and_are_exported():
    for module_name, names in PUBLIC.items():
        module = getattr(kerasllm, module_name)
        for name in names:
            assert hasattr(module, name), f"kerasllm.{module_name}.{name} is missing"
            assert name in module.__all__, f"kerasllm.{module_name}.__all__ lacks {name}"


def test_ignore_index_is_one_value():
    assert kerasllm.losses.IGNORE_INDEX == kerasllm.data.IGNORE_INDEX == -100


def test_every_api_page_directive_resolves():
    docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api"
    for page in docs.glob("*.md"):
        for target in re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M):
            module_path, _, name = target.rpartition(".")
            obj = kerasllm
            for part in target.split(".")[1:]:
                obj = getattr(obj, part, None)
                assert obj is not None, f"{page.name}: {target} does not exist"
