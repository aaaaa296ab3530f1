"""Training losses of the two student stages.

Stage 1 (distillation, no MOS), for student scores ``s`` of images with teacher scores ``ŷ_T``
and student scores ``s_a``, ``s_b`` of teacher-judged pairs (``t_ab`` = 1 when the teacher prefers
``a``, confidence ``ω``)::

    L_dis = SmoothL1(s, ŷ_T) + λ_dis · mean_pairs[ ω · BCE(σ(s_a − s_b), t_ab) ]

Stage 2 (calibration on MOS)::

    L_cal = MSE(pred, mos) + λ_cal · (1 − PLCC_batch(pred, mos))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PLCC_EPS = 1e-8


def point_loss(s: torch.Tensor, teacher_score: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (β = 1, mean) between student scores and teacher scores; 0 for no images."""
    if s.numel() == 0:
        return s.new_zeros(())
    return F.smooth_l1_loss(s, teacher_score.to(s.dtype), beta=1.0)


def pair_loss(
    s_a: torch.Tensor, s_b: torch.Tensor, t_ab: torch.Tensor, omega: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over pairs of ``ω · BCE(σ(s_a − s_b), t_ab)`` (computed with logits for stability;
    ``omega=None`` weighs every pair 1); 0 for no pairs."""
    if s_a.numel() == 0:
        return s_a.new_zeros(())
    per_pair = F.binary_cross_entropy_with_logits(s_a - s_b, t_ab.to(s_a.dtype), reduction="none")
    if omega is not None:
        per_pair = per_pair * omega.to(s_a.dtype)
    return per_pair.mean()


def distill_loss(
    s: torch.Tensor,
    teacher_score: torch.Tensor,
    s_a: torch.Tensor,
    s_b: torch.Tensor,
    t_ab: torch.Tensor,
    omega: torch.Tensor,
    lambda_dis: float,
    use_point: bool = True,
    use_pair: bool = True,
    use_omega: bool = True,
) -> torch.Tensor:
    """Stage-1 loss ``SmoothL1(s, ŷ_T) + λ_dis · mean(ω · BCE(σ(s_a − s_b), t_ab))``.

    ``use_point``/``use_pair`` switch the two terms off (ablations); ``use_omega=False`` weighs
    every pair 1. With no pairs the pair term is 0.
    """
    if not (use_point or use_pair):
        raise ValueError("distill_loss needs the point term, the pair term or both")
    total = s.new_zeros(()) if s.numel() else s_a.new_zeros(())
    if use_point:
        total = total + point_loss(s, teacher_score)
    if use_pair:
        total = total + lambda_dis * pair_loss(s_a, s_b, t_ab, omega if use_omega else None)
    return total


def batch_plcc(pred: torch.Tensor, target: torch.Tensor, eps: float = PLCC_EPS) -> torch.Tensor:
    """Differentiable Pearson correlation of a batch; 0 (not NaN) when either side is constant
    or the batch has fewer than two items."""
    if pred.numel() < 2:
        return pred.new_zeros(())
    pred_c = pred - pred.mean()
    target_c = target.to(pred.dtype) - target.to(pred.dtype).mean()
    norm = torch.sqrt((pred_c.square().sum() + eps) * (target_c.square().sum() + eps))
    return (pred_c * target_c).sum() / norm


def calibration_loss(pred: torch.Tensor, target: torch.Tensor, lambda_cal: float) -> torch.Tensor:
    """Stage-2 loss ``MSE(pred, target) + λ_cal · (1 − batch_plcc(pred, target))``."""
    return F.mse_loss(pred, target.to(pred.dtype)) + lambda_cal * (1.0 - batch_plcc(pred, target))
