"""Student losses against hand-computed values."""

import math

import pytest
import torch

from leaf.student.losses import (
    batch_plcc,
    calibration_loss,
    distill_loss,
    pair_loss,
    point_loss,
)

# point term: |1 - 1.5| = 0.5 -> 0.5 * 0.5^2 = 0.125; |3 - 1| = 2 -> 2 - 0.5 = 1.5; mean 0.8125
S, Y = torch.tensor([1.0, 3.0]), torch.tensor([1.5, 1.0])
POINT = 0.8125
# pair 1: s_a - s_b = 2, t = 1: log(1 + e^-2); pair 2: 0, t = 0: log 2
S_A, S_B = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
T_AB, OMEGA = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.0])
BCE_1, BCE_2 = math.log1p(math.exp(-2.0)), math.log(2.0)
PAIR_WEIGHTED = (0.5 * BCE_1 + 1.0 * BCE_2) / 2
PAIR_UNWEIGHTED = (BCE_1 + BCE_2) / 2


def _distill(**flags):
    return float(distill_loss(S, Y, S_A, S_B, T_AB, OMEGA, lambda_dis=0.5, **flags))


def test_point_and_pair_terms():
    assert float(point_loss(S, Y)) == pytest.approx(POINT)
    assert float(pair_loss(S_A, S_B, T_AB, OMEGA)) == pytest.approx(PAIR_WEIGHTED)
    assert float(pair_loss(S_A, S_B, T_AB)) == pytest.approx(PAIR_UNWEIGHTED)


def test_distill_loss_and_its_ablation_flags():
    assert _distill() == pytest.approx(POINT + 0.5 * PAIR_WEIGHTED)
    assert _distill(use_omega=False) == pytest.approx(POINT + 0.5 * PAIR_UNWEIGHTED)
    assert _distill(use_pair=False) == pytest.approx(POINT)
    assert _distill(use_point=False) == pytest.approx(0.5 * PAIR_WEIGHTED)
    with pytest.raises(ValueError):
        _distill(use_point=False, use_pair=False)


def test_zero_pairs_give_a_zero_pair_term():
    empty = torch.zeros(0)
    s = S.clone().requires_grad_()
    loss = distill_loss(s, Y, empty, empty, empty, empty, lambda_dis=0.5)
    assert float(loss.detach()) == pytest.approx(POINT)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_pair_term_is_stable_for_large_margins():
    loss = pair_loss(torch.tensor([200.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(loss) == pytest.approx(200.0)


def test_batch_plcc_hand_value_and_constant_guard():
    pred = torch.tensor([1.0, 2.0, 3.0])
    target = torch.tensor([1.0, 2.0, 4.0])
    assert float(batch_plcc(pred, target)) == pytest.approx(9 / math.sqrt(84), abs=1e-6)
    constant = torch.full((4,), 2.0, requires_grad=True)
    value = batch_plcc(constant, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert float(value.detach()) == 0.0
    value.backward()
    assert torch.isfinite(constant.grad).all()
    assert float(batch_plcc(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0


def test_calibration_loss_hand_value():
    pred = torch.tensor([1.0, 2.0, 3.0])
    target = torch.tensor([1.0, 2.0, 4.0])
    expected = 1 / 3 + 2.0 * (1 - 9 / math.sqrt(84))
    assert float(calibration_loss(pred, target, lambda_cal=2.0)) == pytest.approx(
        expected, abs=1e-6
    )
