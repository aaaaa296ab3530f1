"""Head training on cached features: stage 1 (distillation) and stage 2 (calibration).

Both stages are deterministic on CPU: the same inputs, seed and thread count give bit-identical
weights. Shuffling uses a generator seeded with ``seed``, dropout the global generator seeded by
``torch.manual_seed(seed)``, and deterministic algorithms are enforced while training.

Checkpoint selection:

* stage 1 has no labels, so it keeps the **last epoch** (label-free selection);
* stage 2 evaluates the model on the select part of the MOS subset (:func:`select_part_metrics`,
  see docs/design.md) after every epoch, including epoch 0 (the least-squares mapped head before
  fine-tuning), and keeps the best by SRCC, ties broken by the lower MSE. With fewer than 3
  ``select`` images it keeps the last epoch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from leaf.metrics import plcc, srcc
from leaf.student.heads import CalibratedHead, QualityHead, as_tensor
from leaf.student.losses import calibration_loss, distill_loss

log = logging.getLogger(__name__)

MIN_SELECT_IMAGES = 3
PREDICT_BATCH = 8192


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch, enforce deterministic algorithms (restored on exit) and yield a shuffling
    generator seeded with ``seed``."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def shuffled_batches(n: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` cut into ``steps`` near-equal batches (some empty
    when ``n < steps``)."""
    return list(torch.tensor_split(torch.randperm(n, generator=generator), steps))


def predict(head: torch.nn.Module, features: np.ndarray | torch.Tensor) -> np.ndarray:
    """Scores (n,) float32 of ``features`` (n, d) by ``head`` in eval mode (a calibrated head
    predicts on the MOS scale)."""
    head.eval()
    features = as_tensor(features)
    with torch.inference_mode():
        chunks = [head(chunk) for chunk in torch.split(features, PREDICT_BATCH)]
    return torch.cat(chunks).numpy() if chunks else np.zeros(0, np.float32)


def pair_agreement(scores: np.ndarray, index_a: np.ndarray, index_b: np.ndarray, t_ab) -> float:
    """Share of pairs where the order of ``scores`` matches the teacher's choice (NaN: none)."""
    if len(index_a) == 0:
        return float("nan")
    return float(np.mean((scores[index_a] > scores[index_b]) == (np.asarray(t_ab) > 0.5)))


def distill_head(
    train_features: np.ndarray,
    teacher_scores: np.ndarray,
    pair_index_a: np.ndarray,
    pair_index_b: np.ndarray,
    t_ab: np.ndarray,
    omega: np.ndarray,
    hidden: int,
    dropout: float,
    lambda_dis: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    use_point: bool = True,
    use_pair: bool = True,
    use_omega: bool = True,
) -> tuple[QualityHead, pd.DataFrame]:
    """Stage 1: fit a :class:`QualityHead` to the teacher's point scores and pair preferences.

    ``pair_index_a``/``pair_index_b`` are row indices into ``train_features``. Every epoch walks
    a shuffled pass over the images (batches of ``batch_size``) zipped with a shuffled pass over
    all pairs cut into the same number of steps, so both terms see all their data each epoch
    (without the point term the steps come from pairs in batches of ``batch_size``). AdamW;
    the last epoch is returned (no labels to select on). The history has one row per epoch:
    epoch, loss (mean over steps), teacher_srcc (train SRCC against the teacher scores) and
    pair_agreement (share of pairs ordered as the teacher chose).
    """
    features = as_tensor(train_features)
    scores = as_tensor(teacher_scores)
    index_a = torch.from_numpy(np.array(pair_index_a, dtype=np.int64))
    index_b = torch.from_numpy(np.array(pair_index_b, dtype=np.int64))
    t_tensor, omega_tensor = as_tensor(t_ab), as_tensor(omega)
    n_images, n_pairs = len(features), len(index_a)
    if len(scores) != n_images or not (
        len(index_b) == len(t_tensor) == len(omega_tensor) == n_pairs
    ):
        raise ValueError("distill_head: inconsistent lengths of features/scores or pair arrays")
    if use_pair and n_pairs == 0:
        log.info("no teacher pairs: the pair term is off")
        use_pair = False
    if not (use_point or use_pair):
        raise ValueError("distill_head needs the point term, the pair term or both")
    steps = max(1, math.ceil((n_images if use_point else n_pairs) / batch_size))

    with deterministic(seed) as generator:
        head = QualityHead(features.shape[1], hidden, dropout)
        head.fit_standardisation(features)
        if use_point:
            with torch.no_grad():
                head.output.bias.fill_(float(scores.mean()))
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        history = []
        for epoch in range(1, epochs + 1):
            head.train()
            image_batches = shuffled_batches(n_images, steps, generator)
            pair_batches = shuffled_batches(n_pairs, steps, generator)
            losses = []
            for images, pairs in zip(image_batches, pair_batches, strict=True):
                images = images if use_point else images[:0]
                pairs = pairs if use_pair else pairs[:0]
                if len(images) == 0 and len(pairs) == 0:
                    continue
                rows = torch.cat([images, index_a[pairs], index_b[pairs]])
                s, s_a, s_b = torch.split(
                    head(features[rows]), [len(images), len(pairs), len(pairs)]
                )
                loss = distill_loss(
                    s,
                    scores[images],
                    s_a,
                    s_b,
                    t_tensor[pairs],
                    omega_tensor[pairs],
                    lambda_dis,
                    use_point=use_point,
                    use_pair=use_pair,
                    use_omega=use_omega,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            predicted = predict(head, features)
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else float("nan"),
                    "teacher_srcc": srcc(predicted, teacher_scores),
                    "pair_agreement": pair_agreement(
                        predicted, index_a.numpy(), index_b.numpy(), t_ab
                    ),
                }
            )
    frame = pd.DataFrame(history, columns=["epoch", "loss", "teacher_srcc", "pair_agreement"])
    if len(frame):
        last = frame.iloc[-1]
        log.info(
            "distilled %d epochs: loss %.4f, teacher SRCC %.3f, pair agreement %.3f",
            epochs,
            last["loss"],
            last["teacher_srcc"],
            last["pair_agreement"],
        )
    return head.eval(), frame


def least_squares_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept minimising ``||a x + b - y||²`` (slope 0 for a constant ``x``)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(np.mean(y))
    slope, intercept = np.polyfit(x, y, deg=1)
    return float(slope), float(intercept)


def select_part_metrics(model: CalibratedHead, features: torch.Tensor, mos: torch.Tensor) -> dict:
    """``{"select_srcc", "select_plcc", "select_mse"}`` of ``model`` on the select part: SRCC and
    PLCC of its predictions (n,) against ``mos`` (n,), and their MSE in standardised MOS units."""
    predicted = predict(model, features)
    standardised = (predicted - float(model.mos_mean)) / float(model.mos_std)
    target = model.standardise_mos(mos).numpy()
    return {
        "select_srcc": srcc(predicted, mos.numpy()),
        "select_plcc": plcc(predicted, mos.numpy()),
        "select_mse": float(np.mean((standardised - target) ** 2)) if len(target) else math.nan,
    }


def _is_better(candidate: dict, best: dict | None) -> bool:
    """Higher select SRCC wins (NaN loses), ties go to the lower MSE, full ties to the earlier."""
    if best is None:
        return True

    def key(metrics: dict) -> tuple[float, float]:
        value = metrics["select_srcc"]
        return (-math.inf if math.isnan(value) else value, -metrics["select_mse"])

    return key(candidate) > key(best)


class EpochSelector:
    """Checkpoint selection on the held-out select part: keeps the best epoch's weights.

    ``record`` every epoch (epoch 0 = before fine-tuning) with its :func:`select_part_metrics`;
    ``finish``
    restores the best state (or keeps the last epoch when fewer than ``MIN_SELECT_IMAGES``
    select images exist) and returns (chosen_epoch, history frame).
    """

    COLUMNS = ["epoch", "loss", "select_srcc", "select_plcc", "select_mse"]

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.best_metrics: dict | None = None
        self.chosen_epoch = 0

    def record(self, model: torch.nn.Module, epoch: int, loss: float, metrics: dict) -> None:
        self.history.append({"epoch": epoch, "loss": loss, **metrics})
        if _is_better(metrics, self.best_metrics):
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_metrics, self.chosen_epoch = metrics, epoch

    def finish(self, model: torch.nn.Module, n_fit: int, n_select: int) -> tuple[int, pd.DataFrame]:
        if n_select < MIN_SELECT_IMAGES:
            log.warning(
                "only %d select images (< %d): keeping the last epoch instead of selecting",
                n_select,
                MIN_SELECT_IMAGES,
            )
            self.chosen_epoch = self.history[-1]["epoch"]
        else:
            model.load_state_dict(self.best_state)
        log.info(
            "calibrated on %d fit images, selected on %d: epoch %d (select SRCC %.3f)",
            n_fit,
            n_select,
            self.chosen_epoch,
            self.history[self.chosen_epoch]["select_srcc"],
        )
        return self.chosen_epoch, pd.DataFrame(self.history, columns=self.COLUMNS)


def calibrate_head(
    head_init: QualityHead | None,
    fit_features: np.ndarray,
    fit_mos: np.ndarray,
    select_features: np.ndarray,
    select_mos: np.ndarray,
    lambda_cal: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    hidden: int = 0,
    dropout: float = 0.0,
) -> tuple[CalibratedHead, int, pd.DataFrame]:
    """Stage 2: calibrate a head on the MOS of the ``fit`` images, selecting the epoch on the
    ``select`` images.

    MOS are standardised with the fit subset's mean/std (stored in the returned model, which
    predicts on the native MOS scale). An affine output layer is initialised by least squares of
    the head's predictions onto the standardised fit MOS, then the whole model is fine-tuned with
    :func:`~leaf.student.losses.calibration_loss` (AdamW). ``head_init=None`` starts from a fresh
    ``QualityHead(d, hidden, dropout)`` (the "CFT-only" baseline: the same procedure without
    distillation). Returns the model at the chosen epoch (0 = before fine-tuning), that epoch and
    the history (epoch, loss, select_srcc, select_plcc, select_mse).
    """
    fit_x, fit_y = as_tensor(fit_features), as_tensor(fit_mos)
    select_x, select_y = as_tensor(select_features), as_tensor(select_mos)
    if len(fit_x) == 0 or len(fit_x) != len(fit_y) or len(select_x) != len(select_y):
        raise ValueError("calibrate_head needs a non-empty fit subset and matching MOS lengths")
    with deterministic(seed) as generator:
        if head_init is None:
            base = QualityHead(fit_x.shape[1], hidden, dropout)
            base.fit_standardisation(fit_x)
        else:
            base = copy.deepcopy(head_init)
        model = CalibratedHead(base)
        model.set_mos_scale(float(fit_y.mean()), float(fit_y.std(unbiased=False)))
        target = model.standardise_mos(fit_y)
        slope, intercept = least_squares_affine(predict(base, fit_x), target.numpy())
        with torch.no_grad():
            model.affine.weight.fill_(slope)
            model.affine.bias.fill_(intercept)

        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = max(1, math.ceil(len(fit_x) / batch_size))
        selector = EpochSelector()
        selector.record(model, 0, math.nan, select_part_metrics(model, select_x, select_y))
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for rows in shuffled_batches(len(fit_x), steps, generator):
                if len(rows) == 0:
                    continue
                loss = calibration_loss(
                    model.forward_standardised(fit_x[rows]), target[rows], lambda_cal
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            metrics = select_part_metrics(model, select_x, select_y)
            selector.record(model, epoch, float(np.mean(losses)), metrics)

    chosen_epoch, frame = selector.finish(model, len(fit_x), len(select_x))
    return model.eval(), chosen_epoch, frame
