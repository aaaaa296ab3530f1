"""The MLLM teacher backends on a real (tiny, random-weights) Qwen2-VL, fully offline on CPU.

vLLM's per-level log-probs must match the transformers reference; decision words must resolve to
single tokens with the documented leading-space rule; malformed engine output must fail loudly.
One vLLM engine (in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) serves the whole module; a
second one checks the fallback logprob mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed (pip install -e '.[vllm]'): MLLM backend tests skipped"
)

from tiny_vlm import (  # noqa: E402
    FIVE_LEVELS,
    TINY_ENGINE,
    TOLERANCE,
    assert_pair_logprobs_match,
    assert_point_logliks_match,
    offline_in_process_engine,
    write_test_images,
)

from leaf.teacher.backend import TeacherOutputError  # noqa: E402
from leaf.teacher.levels import Levels  # noqa: E402
from leaf.teacher.presets import INTERNVL_TILES, PRESETS, engine_options  # noqa: E402
from leaf.teacher.prompted import token_logprobs  # noqa: E402
from leaf.teacher.prompts import (  # noqa: E402
    ModelProcessors,
    PromptTemplates,
    render_prompts,
)
from leaf.teacher.tokens import (  # noqa: E402
    ResolvedToken,
    TokenResolutionError,
    resolve_word,
    resolve_words,
)

ENGINE = {**TINY_ENGINE, "batch_size": 4}
IMAGE_SIZES = [(40, 60), (64, 64), (90, 50), (112, 112), (30, 30), (80, 120)]


@pytest.fixture(scope="module", autouse=True)
def _offline_in_process_engine():
    with offline_in_process_engine():
        yield


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tiny_vlm import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen2_vl"))


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str]:
    return write_test_images(tmp_path_factory.mktemp("images"), IMAGE_SIZES)


@pytest.fixture(scope="module")
def processors(tiny_model) -> ModelProcessors:
    return ModelProcessors.load(tiny_model)


@pytest.fixture(scope="module")
def hf_teacher(tiny_model):
    from leaf.teacher.hf_backend import TransformersTeacher

    return TransformersTeacher(FIVE_LEVELS, model=tiny_model, batch_size=4)


@pytest.fixture(scope="module")
def vllm_teacher(tiny_model):
    from leaf.teacher.vllm_backend import VllmTeacher

    return VllmTeacher(FIVE_LEVELS, model=tiny_model, **ENGINE)


@pytest.fixture(scope="module")
def fallback_vllm_teacher(tiny_model):
    """A second engine in the fallback mode. Module-scoped on purpose: destroying an in-process
    engine tears down vLLM's global parallel state, which would break the shared engine."""
    from leaf.teacher.vllm_backend import VllmTeacher

    return VllmTeacher(FIVE_LEVELS, model=tiny_model, logprob_mode="allowed_token_ids", **ENGINE)


def _pairs(paths: list[str]) -> tuple[list[str], list[str]]:
    first = paths[:5] + [paths[1]]
    second = paths[1:6] + [paths[0]]
    return first, second


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --- vLLM against the transformers reference -------------------------------------------------


def test_point_logliks_match_transformers(vllm_teacher, hf_teacher, image_paths):
    assert_point_logliks_match(vllm_teacher, hf_teacher, image_paths)


def test_pair_logprobs_match_transformers(vllm_teacher, hf_teacher, image_paths):
    assert_pair_logprobs_match(vllm_teacher, hf_teacher, *_pairs(image_paths))


def test_one_generate_call_per_batch(vllm_teacher, image_paths, monkeypatch):
    calls: list[int] = []
    generate = vllm_teacher._generate

    def spy(requests, params):
        calls.append(len(requests))
        return generate(requests, params)

    monkeypatch.setattr(vllm_teacher, "_generate", spy)
    batched = vllm_teacher.point_logliks(image_paths)
    assert calls == [4, 2]  # batch_size 4, six images: two engine calls, never one per image
    monkeypatch.setattr(vllm_teacher, "batch_size", 1)
    single = np.vstack([vllm_teacher.point_logliks([path]) for path in image_paths])
    assert np.abs(batched - single).max() < TOLERANCE


def test_empty_input(vllm_teacher):
    assert vllm_teacher.point_logliks([]).shape == (0, 5)
    assert vllm_teacher.pair_logprobs([], []).shape == (0, 2)


def test_provenance(vllm_teacher, processors):
    record = vllm_teacher.provenance()
    json.dumps(record)
    import vllm

    assert record["backend"] == "vllm" and record["backend_version"] == vllm.__version__
    assert record["logprob_mode"] == "logprob_token_ids"
    assert record["model"] == vllm_teacher.model
    for kind in ("point", "pair"):
        text = record[f"prompt_{kind}"]
        assert record[f"prompt_{kind}_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert record["prompt_point"].endswith("<|im_start|>assistant\nThe quality of the image is")
    assert record["prompt_pair"].count("<|image_pad|>") == 2
    tokenizer = processors.tokenizer
    expected_levels = tokenizer.convert_tokens_to_ids(["Ġ" + word for word in FIVE_LEVELS.words])
    assert record["level_token_ids"] == expected_levels
    assert record["level_tokens"] == [" " + word for word in FIVE_LEVELS.words]
    assert record["pair_token_ids"] == tokenizer.convert_tokens_to_ids(["A", "B"])


def test_fallback_allowed_token_ids_mode(fallback_vllm_teacher, hf_teacher, image_paths):
    teacher = fallback_vllm_teacher
    assert teacher.provenance()["logprob_mode"] == "allowed_token_ids+processed_logprobs"
    result = teacher.point_logliks(image_paths[:3])
    # Renormalised over the level tokens: equal to the reference up to a per-row constant.
    reference = _log_softmax(hf_teacher.point_logliks(image_paths[:3]))
    assert np.abs(np.exp(result).sum(axis=1) - 1).max() < 1e-4
    assert np.abs(result - reference).max() < TOLERANCE


# --- malformed engine output ------------------------------------------------------------------


@pytest.mark.parametrize("defect", ["missing", "nan"])
def test_malformed_engine_output_names_the_image(vllm_teacher, image_paths, monkeypatch, defect):
    generate = vllm_teacher._generate

    def corrupt(requests, params):
        """Break the last requested decision token ('Bad' or 'B') in the second output."""
        outputs = generate(requests, params)
        step = outputs[1].outputs[0].logprobs[0]
        broken = params.logprob_token_ids[-1]
        if defect == "missing":
            del step[broken]
        else:
            step[broken].logprob = math.nan
        return outputs

    monkeypatch.setattr(vllm_teacher, "_generate", corrupt)
    with pytest.raises(TeacherOutputError, match=r"'Bad'.* image \S*img1\.png$"):
        vllm_teacher.point_logliks(image_paths[:3])
    first, second = _pairs(image_paths)
    with pytest.raises(
        TeacherOutputError, match=r"'B'.* image pair \(\S*img1\.png, \S*img2\.png\)"
    ):
        vllm_teacher.pair_logprobs(first[:3], second[:3])


def test_token_logprobs_rejects_missing_nan_and_inf():
    tokens = (ResolvedToken("Good", " Good", 3), ResolvedToken("Bad", " Bad", 4))
    assert token_logprobs({3: -1.0, 4: -2.0, 9: -0.1}, tokens, "image x").tolist() == [-1.0, -2.0]
    for broken in ({3: -1.0}, {3: -1.0, 4: math.nan}, {3: -math.inf, 4: -1.0}, None):
        with pytest.raises(TeacherOutputError, match="image x"):
            token_logprobs(broken, tokens, "image x")


# --- prompts ----------------------------------------------------------------------------------


def test_prompts_render_through_the_model_chat_template(processors):
    rendered = render_prompts(processors.chat_source, PromptTemplates())
    point, pair = rendered["point"].text, rendered["pair"].text
    assert point.startswith("<|im_start|>system\n")
    assert "<|vision_start|><|image_pad|><|vision_end|> Can you rate" in point
    assert point.endswith("<|im_start|>assistant\nThe quality of the image is")
    assert pair.endswith("Answer with A or B.<|im_end|>\n<|im_start|>assistant\n")
    # String-content rendering with the model's placeholder gives the same text for Qwen2-VL.
    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    as_strings = render_prompts(processors.tokenizer, PromptTemplates(), placeholder)
    assert {kind: prompt.text for kind, prompt in as_strings.items()} == {
        "point": point,
        "pair": pair,
    }


def test_prompt_templates_from_config():
    custom = PromptTemplates.from_config(
        {"point": "<image> Rate it.", "pair": {"user": "<image> or <image>?", "answer": "Image"}}
    )
    assert custom.point.answer == "The quality of the image is"
    assert custom.pair.answer == "Image"
    assert PromptTemplates.from_config(None) == PromptTemplates()
    with pytest.raises(ValueError, match="exactly 2"):
        PromptTemplates.from_config({"pair": "Which of <image> is better?"})
    with pytest.raises(ValueError, match="unknown prompt kind"):
        PromptTemplates.from_config({"points": "<image>"})


# --- token resolution -------------------------------------------------------------------------


def test_leading_space_variant_after_a_word(processors):
    tokenizer = processors.tokenizer
    token = resolve_word(tokenizer, "Good", "The quality of the image is")
    assert token.text == " Good"
    assert token.token_id == tokenizer.convert_tokens_to_ids("ĠGood")
    assert token.token_id != tokenizer.convert_tokens_to_ids("Good")


def test_bare_variant_after_a_newline(processors):
    tokenizer = processors.tokenizer
    token = resolve_word(tokenizer, "A", "<|im_start|>assistant\n")
    assert (token.text, token.token_id) == ("A", tokenizer.convert_tokens_to_ids("A"))
    assert resolve_word(tokenizer, "Good").text == "Good"  # no context: bare word first


def test_other_variant_when_the_preferred_one_is_not_a_token(processors):
    # The tiny vocabulary has "Can" only with a leading space: after a newline (bare spelling
    # preferred) the spaced one is used.
    tokenizer = processors.tokenizer
    token = resolve_word(tokenizer, "Can", "<|im_start|>assistant\n")
    assert (token.text, token.token_id) == (" Can", tokenizer.convert_tokens_to_ids("ĠCan"))
    # After a word, a bare spelling merges with it: "issystem" is not "is" + "system".
    with pytest.raises(TokenResolutionError, match="'system' merges with the end of the prompt"):
        resolve_word(tokenizer, "system", "The quality of the image is")


def test_multi_token_word_is_a_clear_error(processors):
    with pytest.raises(TokenResolutionError, match=r"'very good'.*Ġvery.*Ġgood"):
        resolve_word(processors.tokenizer, "very good", "The quality of the image is")
    with pytest.raises(TokenResolutionError, match=r"'Superb'.*<unk>"):
        resolve_word(processors.tokenizer, "Superb", "The quality of the image is")


def test_two_level_teacher(tiny_model, image_paths, processors):
    from leaf.teacher.hf_backend import TransformersTeacher

    levels = Levels(("good", "poor"), (1.0, 0.0))
    teacher = TransformersTeacher(levels, model=tiny_model, batch_size=8)
    result = teacher.point_logliks(image_paths[:3])
    assert result.shape == (3, 2) and np.isfinite(result).all()
    tokens = resolve_words(processors.tokenizer, levels.words, "The quality of the image is")
    assert [token.text for token in tokens] == [" good", " poor"]
    assert teacher.provenance()["level_token_ids"] == [token.token_id for token in tokens]


# --- presets ----------------------------------------------------------------------------------


def test_engine_options_merge_defaults_preset_and_explicit():
    options = engine_options("qwen3_vl_8b", max_num_seqs=8, enforce_eager=None)
    assert options["model"] == "Qwen/Qwen3-VL-8B-Instruct"
    assert options["dtype"] == "bfloat16" and options["max_num_seqs"] == 8
    assert options["enforce_eager"] is False  # None keeps the default
    # No preset runs code downloaded with the checkpoint, or needs a string image placeholder.
    for content in PRESETS.values():
        assert not content.get("trust_remote_code") and content.get("image_placeholder") is None
    with pytest.raises(KeyError, match="unknown vLLM preset"):
        engine_options("no_such_preset")
    with pytest.raises(ValueError, match="needs a model"):
        engine_options(None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_vllm_engine_arguments(name):
    from leaf.teacher.vllm_backend import LOGPROB_TOKEN_IDS, import_vllm, llm_kwargs

    vllm = import_vllm()
    kwargs = llm_kwargs(engine_options(name), LOGPROB_TOKEN_IDS)
    assert kwargs["limit_mm_per_prompt"] == {"image": 2}
    assert "batch_size" not in kwargs and "image_placeholder" not in kwargs
    # Every key must be a vLLM engine argument (constructing EngineArgs would look up the hub).
    engine_fields = {field.name for field in dataclasses.fields(vllm.EngineArgs)}
    assert set(kwargs) <= engine_fields, set(kwargs) - engine_fields
    assert kwargs["model"] == PRESETS[name]["model"] and kwargs["dtype"] == "bfloat16"
    if name.startswith("qwen3_vl"):
        assert kwargs["mm_processor_kwargs"] == {"min_pixels": 65536, "max_pixels": 1310720}
    if name.startswith("internvl3_5"):
        assert kwargs["model"].endswith("-HF")  # the transformers-format checkpoint
        assert kwargs["mm_processor_kwargs"] == INTERNVL_TILES
