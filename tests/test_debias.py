"""Position-debiased pairs: both orders asked and combined; disagreement recorded."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from leaf.teacher.levels import (
    debiased_pair_logprobs,
    order_disagreement,
    pair_confidence,
    pair_probability,
)
from leaf.teacher.steps import teacher_pair_step


def _logprobs(p_first):
    p_first = np.asarray(p_first, dtype=float)
    return np.log(np.column_stack([p_first, 1 - p_first]))


def test_hand_computed_combination():
    # forward: P(a better) = 0.8; reverse (b shown first): P(b better) = 0.4 -> P(a better) = 0.6
    logprobs, p_fwd, p_rev = debiased_pair_logprobs(_logprobs([0.8]), _logprobs([0.4]))
    assert p_fwd == pytest.approx([0.8]) and p_rev == pytest.approx([0.6])
    assert pair_probability(logprobs[:, 0], logprobs[:, 1]) == pytest.approx([0.7])


def test_constant_slot_bias_cancels_and_disagreement_lowers_confidence():
    truth = np.array([0.7, 0.55, 0.2])
    bias = 0.15  # the model adds 0.15 to whichever image is shown first
    forward = _logprobs(truth + bias)
    reverse = _logprobs((1 - truth) + bias)
    logprobs, p_fwd, p_rev = debiased_pair_logprobs(forward, reverse)
    combined = pair_probability(logprobs[:, 0], logprobs[:, 1])
    np.testing.assert_allclose(combined, truth, atol=1e-12)
    disagree = order_disagreement(p_fwd, p_rev)
    # 0.55: forward says a (0.70), reverse says b (0.40) -> disagreement; others agree
    assert disagree.tolist() == [False, True, False]
    assert pair_confidence(combined)[1] < pair_confidence(truth + bias)[1]


class SlotBiasedJudge:
    """Test double (not a teacher): the lower-named image is better (clearly, except b vs c),
    plus a constant +0.2 preference for the first slot."""

    name = "slot-biased-test-double"

    def pair_logprobs(self, paths_a, paths_b):
        truth = []
        for a, b in zip(paths_a, paths_b, strict=True):
            margin = 0.05 if {a, b} == {"b", "c"} else 0.25
            truth.append(0.5 + margin if a < b else 0.5 - margin)
        return _logprobs(np.array(truth) + 0.2)

    def provenance(self):
        return {"backend": self.name}


@pytest.mark.parametrize("debias", [False, True])
def test_pairs_step_records_both_orders(tmp_path, monkeypatch, debias):
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": list("abcd"), "path": list("abcd")}).to_parquet(manifest)
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame(
        {"pair_id": [0, 1, 2], "image_a": ["a", "d", "b"], "image_b": ["b", "a", "c"]}
    ).to_parquet(pairs)
    monkeypatch.setattr(
        "leaf.teacher.steps.make_backend", lambda cfg, speed=None: SlotBiasedJudge()
    )
    teacher = {
        "backend": "brisque",
        "levels": {"words": ["Good", "Poor"], "values": [1, 0]},
        "pairs": {"debias": debias},
    }
    out = tmp_path / "teacher_pairs.parquet"
    teacher_pair_step(str(manifest), str(pairs), str(out), teacher)
    frame = pd.read_parquet(out)
    metadata = json.loads(pq.read_schema(out).metadata[b"leaf"])
    assert metadata["debias"] is debias
    if not debias:
        assert "orders_disagree" not in frame.columns
        assert frame["p_A"].tolist() == pytest.approx([0.95, 0.45, 0.75])
        return
    # (b, c): forward 0.55 + 0.2 for b; reverse (c first) 0.45 + 0.2 for c -> (0.75 + 0.35) / 2
    assert frame["p_A"].tolist() == pytest.approx([0.75, 0.25, 0.55])
    assert frame["orders_disagree"].tolist() == [False, False, True]
    assert metadata["counts"]["n_orders_disagree"] == 1
