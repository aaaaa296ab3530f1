"""Build tiny random-weights VLMs of the teacher presets' families, fully offline and in seconds.

One generic builder (:func:`build_tiny_vlm`) and one :class:`TinyFamily` spec per model family:

- :data:`QWEN2_VL`: ``Qwen2VLForConditionalGeneration`` with Qwen2-VL's chat template (the
  original tiny model of the backend tests; :func:`build_tiny_qwen2_vl`);
- :data:`INTERNVL3_5_HF`: ``InternVLForConditionalGeneration`` (a Qwen3 decoder, as in
  InternVL-3.5) with ``InternVLProcessor`` and the GOT-OCR2 image processor, in the transformers
  format of ``OpenGVLab/InternVL3_5-8B-HF`` (preset ``internvl3_5_8b``);
- :data:`QWEN3_VL`: ``Qwen3VLForConditionalGeneration`` with ``Qwen3VLProcessor`` and
  Qwen3-VL-Instruct's chat template (preset ``qwen3_vl_8b``).

Each model is the real transformers class (hidden size 128, 2 decoder layers, text head size 64, a
vision tower of 1-2 blocks with head size 32) saved with ``save_pretrained`` together with its
real processor class and a tokenizer made with the ``tokenizers`` library, so that
``AutoProcessor``/``AutoTokenizer``/``AutoModelForImageTextToText`` and vLLM all load it from the
folder, without remote code.

The tokenizer is a word-level vocabulary behind GPT-2's byte-level pre-tokenizer: like the real
byte-level BPE of Qwen (which InternVL-3.5 uses too), a word that follows a space is the token
``"Ġword"``. Every word of the default prompts is in the vocabulary, and every level word
(Excellent, Good, Fair, Poor, Bad, good, poor) and A/B exists both bare and with a leading space,
each as ONE token, as in the real Qwen vocabulary. Anything else maps to ``<unk>``. The family's
special tokens (chat markers, image markers) are added special tokens. Weights are seeded, so two
builds are identical.

Sources of the chat templates and special tokens (the model hub is not reachable here; taken from
public copies found with the code/docs search, see each constant):

- Qwen2-VL: the chat template of ``Qwen/Qwen2-VL-*-Instruct`` (without its video and vision-id
  branches).
- InternVL-3.5-HF: the chat template written by transformers' conversion script
  ``src/transformers/models/internvl/convert_internvl_weights_to_hf.py`` (huggingface/transformers,
  ``chat_template`` with ``'<IMG_CONTEXT>\\n'`` per image; 481 bytes, the size of the published
  ``OpenGVLab/InternVL3-8B-hf/chat_template.jinja``); the tokenizer's named tokens
  (``start_image_token`` ``<img>``, ``end_image_token`` ``</img>``, ``context_image_token``
  ``<IMG_CONTEXT>``, ``video_token`` ``<video>``) and the added tokens ``<quad> </quad> <ref>
  </ref> <box> </box>`` from the same script's ``write_tokenizer``; eos ``<|im_end|>``, pad
  ``<|endoftext|>``, ``model_max_length`` 8192 (``CONTEXT_LENGTH``), ``image_seq_length`` from
  ``processor_config.json`` of the InternVL3.5 checkpoints. The files of
  ``OpenGVLab/InternVL3_5-8B-HF`` itself could not be read byte for byte.
- Qwen3-VL: ``chat_template.json`` of ``Qwen/Qwen3-VL-8B-Instruct`` (Apache-2.0), in full, in
  tests/data/qwen3_vl_chat_template.jinja (120 lines, as reproduced identically by several public
  repositories; the model hub itself was not reachable); the tokenizer's defaults
  (``<|image_pad|>``, ``<|vision_start|>``, ...) of ``Qwen3VLProcessor``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.teacher.levels import Levels
from leaf.teacher.prompts import IMAGE_MARKER, PromptTemplates
from leaf.torch_compat import ensure_torchvision_importable

SEED = 1234
# vLLM engine options for these models on a CPU: explicit KV cache size, eager mode, in-process
# executor (set VLLM_ENABLE_V1_MULTIPROCESSING=0 too). Used by every test that starts an engine.
TINY_ENGINE = {
    "dtype": "float32",
    "enforce_eager": True,
    "kv_cache_memory_bytes": 64 << 20,
    "max_model_len": 1024,
    "max_num_seqs": 8,
    "distributed_executor_backend": "uni",
}
UNK_TOKEN = "<unk>"
# Words available bare and with a leading space, one token each.
LEVEL_WORDS = ("Excellent", "Good", "Fair", "Poor", "Bad", "good", "poor", "A", "B")
# Extra words the tests use (e.g. "very good" is two tokens).
EXTRA_TEXT = "How would you rate this picture? Its quality is very"
# Tiny decoder shared by every family: head size 64 (supported by vLLM's CPU attention).
TEXT_SIZES = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
# The Qwen chat and vision tokens (Qwen2-VL, Qwen3-VL).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# What the tests of the teacher backends compare: five levels, and vLLM against transformers.
FIVE_LEVELS = Levels(("Excellent", "Good", "Fair", "Poor", "Bad"), (5.0, 4.0, 3.0, 2.0, 1.0))
TOLERANCE = 1e-4


@dataclass(frozen=True)
class TinyFamily:
    """What differs between model families; :func:`build_tiny_vlm` does the rest.

    ``special_tokens`` are added special tokens (ids right after ``<unk>``, in this order);
    ``named_tokens`` become the tokenizer's named special tokens (``tokenizer.<name>``);
    ``image_start_token`` opens each image in the expanded model input (one per image);
    ``processor(tokenizer)`` returns the family's processor; ``model_config(token_ids)`` returns
    the model config; ``preset`` names the LEAF preset this family stands for and ``sizes`` the
    preset options to override so that images fit the tiny model.
    """

    name: str
    model_class: str
    chat_template: str
    processor: Callable[[Any], Any]
    model_config: Callable[[Mapping[str, int]], Any]
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    image_start_token: str = "<|vision_start|>"
    eos_token: str = "<|im_end|>"
    pad_token: str = "<|endoftext|>"
    preset: str | None = None
    sizes: Mapping[str, Any] = field(default_factory=dict)
    named_tokens: Mapping[str, str] = field(default_factory=dict)
    model_max_length: int = 4096


@contextmanager
def offline_in_process_engine() -> Iterator[None]:
    """Environment of every test that starts a vLLM engine: no hub access, engine in-process."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield


def write_test_images(folder: Path, sizes: Sequence[tuple[int, int]], seed: int = 7) -> list[str]:
    """PNG images of the given (height, width): colour ramps with more noise in later images,
    so that different images get different judgments. Returns their paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index, (height, width) in enumerate(sizes):
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1.0, size=(1, 1, 3))
        noise = rng.normal(0, 10 + 15 * index, size=(height, width, 3))
        pixels = np.clip(ramp + noise, 0, 255).astype(np.uint8)
        path = Path(folder) / f"img{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def _corpus() -> str:
    """Text of the chat templates and the default prompts; its pre-tokens form the vocabulary."""
    defaults = PromptTemplates()
    texts = ["system", "user", "assistant", "You are a helpful assistant.", EXTRA_TEXT]
    for template in (defaults.point, defaults.pair):
        texts += [template.user.replace(IMAGE_MARKER, " "), template.answer]
    return "\n".join(texts) + "\n"


def _vocabulary(family: TinyFamily) -> dict[str, int]:
    """Special tokens, then every byte-level pre-token of the corpus and of the level words."""
    from tokenizers import pre_tokenizers

    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    words: list[str] = [UNK_TOKEN, *family.special_tokens]
    texts = [_corpus(), *LEVEL_WORDS, *(" " + word for word in LEVEL_WORDS)]
    for text in texts:
        for piece, _ in pre_tokenizer.pre_tokenize_str(text):
            if piece not in words:
                words.append(piece)
    return {word: index for index, word in enumerate(words)}


def _build_tokenizer(family: TinyFamily, vocab: Mapping[str, int]) -> Any:
    """The family's fast tokenizer over ``vocab`` (with its chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab=dict(vocab), unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(family.special_tokens))
    extra = {"extra_special_tokens": dict(family.named_tokens)} if family.named_tokens else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK_TOKEN,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        model_max_length=family.model_max_length,
        **extra,
    )
    tokenizer.chat_template = family.chat_template
    return tokenizer


def _build_model(family: TinyFamily, config: Any, out_dir: Path) -> None:
    """Write the seeded random weights and the model config."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    model = getattr(transformers, family.model_class)(config)
    # The default init (std 0.02) makes every next-token distribution almost uniform; larger
    # output weights give the level words clearly different log-probabilities.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(SEED))
    model = model.to(torch.float32).eval()
    model.save_pretrained(out_dir)


def build_tiny_vlm(family: TinyFamily, out_dir: str | Path) -> str:
    """Create the tiny model of ``family`` in ``out_dir`` (created if needed); return its path."""
    ensure_torchvision_importable()
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary(family)
    tokenizer = _build_tokenizer(family, vocab)
    tokenizer.save_pretrained(path)
    family.processor(tokenizer).save_pretrained(path)
    _build_model(family, family.model_config(vocab), path)
    (path / "leaf_tiny_vlm.json").write_text(
        json.dumps(
            {
                "builder": "tests/tiny_vlm.py",
                "family": family.name,
                "seed": SEED,
                "vocab_size": len(vocab),
            }
        )
    )
    return str(path)


# --- Qwen2-VL -----------------------------------------------------------------------------------

# Pixel limits of the image processor: images are resized to 28..112 pixels a side (1..16 tokens).
MIN_PIXELS = 28 * 28
MAX_PIXELS = 112 * 112
IMAGE_TOKEN = "<|image_pad|>"
SPECIAL_TOKENS = QWEN_SPECIAL_TOKENS

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


def _qwen_vision_token_ids(token_ids: Mapping[str, int]) -> dict[str, int]:
    return {
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
    }


def _text_config(token_ids: Mapping[str, int], **extra: Any) -> dict[str, Any]:
    """The shared tiny decoder with the family's vocabulary size and special token ids."""
    return {
        **TEXT_SIZES,
        "vocab_size": len(token_ids),
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        **extra,
    }


def _qwen2_vl_processor(tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def _qwen2_vl_config(token_ids: Mapping[str, int]) -> Any:
    from transformers import Qwen2VLConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}
    return Qwen2VLConfig(
        text_config=_text_config(token_ids, rope_parameters=rope),
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
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(token_ids),
    )


QWEN2_VL = TinyFamily(
    "qwen2_vl",
    "Qwen2VLForConditionalGeneration",
    CHAT_TEMPLATE,
    _qwen2_vl_processor,
    _qwen2_vl_config,
)


def build_tiny_qwen2_vl(out_dir: str | Path) -> str:
    """Create the tiny Qwen2-VL in ``out_dir`` (created if needed) and return its path."""
    return build_tiny_vlm(QWEN2_VL, out_dir)


# --- InternVL-3.5 in the transformers format ------------------------------------------------------

# transformers' convert_internvl_weights_to_hf.py: the chat template of the -hf checkpoints.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)
INTERNVL_NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
INTERNVL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
)
# One 56-pixel tile of 14-pixel patches, pixel-shuffled by 0.5: 4 tokens per tile.
INTERNVL_TILE = 56
INTERNVL_PATCH = 14
INTERNVL_TOKENS_PER_TILE = (INTERNVL_TILE // INTERNVL_PATCH) ** 2 // 4


def _internvl_processor(tokenizer: Any) -> Any:
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    size = {"height": INTERNVL_TILE, "width": INTERNVL_TILE}
    # As write_image_processor of the conversion script (ImageNet mean/std), at the tiny size. The
    # tiling defaults differ from the preset's on purpose (at most 2 tiles), so that the tests see
    # the preset's options, not the checkpoint's, decide the tiles.
    image_processor = GotOcr2ImageProcessor(
        size=size,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        crop_to_patches=False,
        min_patches=1,
        max_patches=2,
    )
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=INTERNVL_TOKENS_PER_TILE,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )


def _internvl_config(token_ids: Mapping[str, int]) -> Any:
    from transformers import InternVLConfig

    return InternVLConfig(
        text_config=_text_config(token_ids, model_type="qwen3", head_dim=64),
        vision_config={
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "image_size": INTERNVL_TILE,
            "patch_size": INTERNVL_PATCH,
        },
        image_token_id=token_ids["<IMG_CONTEXT>"],
        image_seq_length=INTERNVL_TOKENS_PER_TILE,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )


INTERNVL3_5_HF = TinyFamily(
    "internvl3_5_hf",
    "InternVLForConditionalGeneration",
    INTERNVL_CHAT_TEMPLATE,
    _internvl_processor,
    _internvl_config,
    special_tokens=INTERNVL_SPECIAL_TOKENS,
    image_start_token="<img>",
    preset="internvl3_5_8b",
    named_tokens=INTERNVL_NAMED_TOKENS,
    model_max_length=8192,
)


# --- Qwen3-VL -------------------------------------------------------------------------------------

QWEN3_VL_CHAT_TEMPLATE = (
    Path(__file__).parent / "data" / "qwen3_vl_chat_template.jinja"
).read_text()
# Qwen3-VL: 16-pixel patches merged 2 x 2, i.e. 32 x 32 pixels per token; 1..16 tokens per image
# with these limits (the preset's, 64..1280 tokens, are too large for the tiny model).
QWEN3_VL_SIZES = {"min_pixels": 32 * 32, "max_pixels": 128 * 128}
# The checkpoint's own limits (Qwen3-VL's preprocessor defaults, 256 x 256 .. 4096 x 4096): the
# tests see that the preset's options, not these, decide the image size.
QWEN3_VL_CHECKPOINT_SIZE = {"shortest_edge": 256 * 256, "longest_edge": 4096 * 4096}


def _qwen3_vl_processor(tokenizer: Any) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        size=QWEN3_VL_CHECKPOINT_SIZE,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, temporal_patch_size=2, merge_size=2),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def _qwen3_vl_config(token_ids: Mapping[str, int]) -> Any:
    from transformers import Qwen3VLConfig

    rope = {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [8, 12, 12],
        "mrope_interleaved": True,
    }
    return Qwen3VLConfig(
        text_config=_text_config(token_ids, head_dim=64, rope_parameters=rope),
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": TEXT_SIZES["hidden_size"],
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        tie_word_embeddings=False,
        **_qwen_vision_token_ids(token_ids),
    )


QWEN3_VL = TinyFamily(
    "qwen3_vl",
    "Qwen3VLForConditionalGeneration",
    QWEN3_VL_CHAT_TEMPLATE,
    _qwen3_vl_processor,
    _qwen3_vl_config,
    preset="qwen3_vl_8b",
    sizes=QWEN3_VL_SIZES,
)

FAMILIES = {family.name: family for family in (QWEN2_VL, INTERNVL3_5_HF, QWEN3_VL)}


# --- checks shared by the engine tests ------------------------------------------------------------


def assert_point_logliks_match(vllm_teacher: Any, reference: Any, paths: Sequence[str]) -> None:
    """vLLM's point log-likelihoods equal the transformers ``reference`` within
    :data:`TOLERANCE`; all finite and negative; different images give different judgments."""
    import numpy as np

    expected = reference.point_logliks(paths)
    result = vllm_teacher.point_logliks(paths)
    assert result.shape == (len(paths), len(FIVE_LEVELS.words))
    assert np.isfinite(result).all() and (result < 0).all()
    assert np.abs(result - expected).max() < TOLERANCE
    assert np.ptp(result, axis=0).max() > 1e-3  # the images matter


def assert_pair_logprobs_match(
    vllm_teacher: Any, reference: Any, first: Sequence[str], second: Sequence[str]
) -> None:
    """vLLM's pair log-probs equal the transformers ``reference`` within :data:`TOLERANCE`, and
    swapping the two images changes them (the order is seen)."""
    import numpy as np

    expected = reference.pair_logprobs(first, second)
    result = vllm_teacher.pair_logprobs(first, second)
    assert result.shape == (len(first), 2) and np.isfinite(result).all()
    assert np.abs(result - expected).max() < TOLERANCE
    assert not np.allclose(vllm_teacher.pair_logprobs(second, first), result)
