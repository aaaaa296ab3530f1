"""Build a tiny random-weights Qwen2-VL, fully offline and in seconds, for the teacher tests.

The model is a real ``Qwen2VLForConditionalGeneration`` (hidden size 128, 2 decoder layers, head
size 64, a one-block vision tower with head size 32) saved with ``save_pretrained`` together with
a tokenizer made with the ``tokenizers`` library, a Qwen2-VL image processor and Qwen2-VL's chat
template, so that ``AutoProcessor``/``AutoTokenizer``/``AutoModelForImageTextToText`` and vLLM all
load it from the folder.

The tokenizer is a word-level vocabulary behind GPT-2's byte-level pre-tokenizer (like Qwen's real
byte-level BPE, a word that follows a space is the token ``"Ġword"``). Every word of the default
prompts is in the vocabulary, and every level word (Excellent, Good, Fair, Poor, Bad, good, poor)
and A/B exists both bare and with a leading space, each as ONE token. Anything else maps to
``<unk>``. Weights are seeded, so two builds are identical.
"""

from __future__ import annotations

import json
from pathlib import Path

from leaf.teacher.prompts import IMAGE_MARKER, PromptTemplates
from leaf.torch_compat import ensure_torchvision_importable

SEED = 1234
# vLLM engine options for this model on a CPU: explicit KV cache size, eager mode, in-process
# executor (set VLLM_ENABLE_V1_MULTIPROCESSING=0 too). Used by every test that starts an engine.
TINY_ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 64 << 20,
    "max_model_len": 1024,
    "max_num_seqs": 8,
    "distributed_executor_backend": "uni",
}
IMAGE_TOKEN = "<|image_pad|>"
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
UNK_TOKEN = "<unk>"
# Words available bare and with a leading space, one token each.
LEVEL_WORDS = ("Excellent", "Good", "Fair", "Poor", "Bad", "good", "poor", "A", "B")
# Extra words the tests use (e.g. "very good" is two tokens).
EXTRA_TEXT = "How would you rate this picture? Its quality is very"


def _corpus() -> str:
    """Text of the chat template and the default prompts; its pre-tokens form the vocabulary."""
    defaults = PromptTemplates()
    texts = ["system", "user", "assistant", "You are a helpful assistant.", EXTRA_TEXT]
    for template in (defaults.point, defaults.pair):
        texts += [template.user.replace(IMAGE_MARKER, " "), template.answer]
    return "\n".join(texts) + "\n"


# Pixel limits of the image processor: images are resized to 28..112 pixels a side (1..16 tokens).
MIN_PIXELS = 28 * 28
MAX_PIXELS = 112 * 112

# Qwen2-VL's own chat template (without the video and vision-id branches).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vocabulary() -> dict[str, int]:
    """Special tokens, then every byte-level pre-token of the corpus and of the level words."""
    from tokenizers import pre_tokenizers

    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    words: list[str] = [UNK_TOKEN, *SPECIAL_TOKENS]
    texts = [_corpus(), *LEVEL_WORDS, *(" " + word for word in LEVEL_WORDS)]
    for text in texts:
        for piece, _ in pre_tokenizer.pre_tokenize_str(text):
            if piece not in words:
                words.append(piece)
    return {word: index for index, word in enumerate(words)}


def _build_tokenizer(out_dir: Path) -> int:
    """Write the tokenizer files; return the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = _vocabulary()
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK_TOKEN,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    return len(vocab)


def _build_processor(out_dir: Path) -> None:
    """Write the Qwen2-VL processor (image processor + tokenizer + chat template) configs."""
    from transformers import (
        AutoTokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)


def _build_model(out_dir: Path, vocab_size: int) -> None:
    """Write the seeded random weights and the model config."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    token_ids = _vocabulary()
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [8, 12, 12],
            },
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "embed_dim": 64,
            "hidden_size": 128,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config)
    # The default init (std 0.02) makes every next-token distribution almost uniform; larger
    # output weights give the level words clearly different log-probabilities.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(SEED))
    model = model.to(torch.float32).eval()
    model.save_pretrained(out_dir)


def build_tiny_qwen2_vl(out_dir: str | Path) -> str:
    """Create the tiny Qwen2-VL in ``out_dir`` (created if needed) and return its path."""
    ensure_torchvision_importable()
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    vocab_size = _build_tokenizer(path)
    _build_processor(path)
    _build_model(path, vocab_size)
    (path / "leaf_tiny_vlm.json").write_text(
        json.dumps({"builder": "tests/tiny_vlm.py", "seed": SEED, "vocab_size": vocab_size})
    )
    return str(path)
