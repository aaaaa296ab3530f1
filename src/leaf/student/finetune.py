"""End-to-end fine-tuning (``student.mode: full``, the paper's): the two training loops.

Beside the cached-feature head mode (:mod:`leaf.student.train`, the CPU default), this mode
trains the whole backbone and the head of a :class:`~leaf.student.finetune_model.FullStudent` on
the inputs of :class:`~leaf.student.finetune_inputs.CachedInputs`:

* AdamW over all parameters, at the :class:`~leaf.student.precision.Precision` of the run;
  channels-last memory format when the inputs are.
* stage 1 (:func:`distill_full`): the same loss and batching as head mode
  (:func:`~leaf.student.losses.distill_loss` with the pair term weighted by ω, ablation flags);
  no labels, so the last epoch is kept. Its history has the mean loss of every epoch; the
  teacher SRCC and pair agreement (an extra evaluation pass) only for the last epoch.
* stage 2 (:func:`calibrate_full`): the stage-1 model wrapped in a
  :class:`~leaf.student.heads.CalibratedHead` (least-squares initialised affine layer, MOS
  scale of the fit subset), fine-tuned with :func:`~leaf.student.losses.calibration_loss`; the
  epoch (0 = before fine-tuning) is selected on the held-out ``select`` part exactly as in head
  mode (never on test data).

Runs are deterministic on CPU for a fixed seed and thread count (all randomness, augmentation
included, comes from the generators seeded by :func:`~leaf.student.train.deterministic`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from leaf.metrics import srcc
from leaf.student.finetune_inputs import CachedInputs
from leaf.student.finetune_model import FullStudent, fresh_student
from leaf.student.heads import CalibratedHead, as_tensor
from leaf.student.losses import calibration_loss, distill_loss
from leaf.student.precision import Precision
from leaf.student.train import (
    EpochSelector,
    deterministic,
    least_squares_affine,
    pair_agreement,
    predict,
    select_part_metrics,
    shuffled_batches,
)

log = logging.getLogger(__name__)


def embed_cached(
    model: FullStudent,
    inputs: CachedInputs,
    rows: np.ndarray,
    batch_size: int,
    precision: Precision,
) -> np.ndarray:
    """Features (n, d) float32 of cache ``rows`` through ``model``'s backbone in eval mode
    (evaluation crops)."""
    model.eval()
    chunks = []
    with torch.inference_mode(), precision.autocast():
        for start in range(0, len(rows), batch_size):
            batch = inputs.to_model(
                inputs.batch(rows[start : start + batch_size]), precision.device
            )
            chunks.append(model.features(batch).float().cpu())
    width = int(getattr(model.backbone, "num_features", 0))
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, width), np.float32)


def cpu_copy(module: nn.Module) -> nn.Module:
    """A CPU copy of a (small) module, for :func:`~leaf.student.train.predict` on features."""
    return copy.deepcopy(module).cpu()


def on_device(model: FullStudent, inputs: CachedInputs, device: torch.device) -> FullStudent:
    """``model`` moved to ``device`` (channels-last when the inputs are)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if inputs.channels_last else model


def optimise_step(
    model: FullStudent,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    images: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    standardised: bool = False,
) -> float:
    """One optimisation step of ``model`` on normalised ``images`` (batch, 3, H, W) under
    ``precision``'s autocast; ``loss_of`` maps the float32 outputs (batch,) (standardised MOS
    units when ``standardised``) to the loss. Returns the loss."""
    with precision.autocast():
        outputs = model.forward_standardised(images) if standardised else model(images)
    loss = loss_of(outputs.float())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


@contextlib.contextmanager
def _timed(what: str, n_images: int) -> Iterator[None]:
    """Log the wall time and images/s of a block."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    log.info(
        "%s: %d images in %.1f s (%.1f images/s)",
        what,
        n_images,
        elapsed,
        n_images / max(elapsed, 1e-9),
    )


def distill_full(
    backbone: nn.Module,
    inputs: CachedInputs,
    rows: np.ndarray,
    teacher_scores: np.ndarray,
    pair_index_a: np.ndarray,
    pair_index_b: np.ndarray,
    t_ab: np.ndarray,
    omega: np.ndarray,
    lambda_dis: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    precision: Precision,
    use_point: bool = True,
    use_pair: bool = True,
    use_omega: bool = True,
) -> tuple[FullStudent, pd.DataFrame]:
    """Stage 1 of the full mode: fine-tune ``backbone`` + a linear head on the teacher.

    ``rows`` are the cache rows of the scored train images; pair indices point into ``rows``.
    Batching follows :func:`~leaf.student.train.distill_head`: every step forwards its images
    and both sides of its pairs (each with its own random crop) in one pass.
    """
    scores, t_tensor, omega_tensor = as_tensor(teacher_scores), as_tensor(t_ab), as_tensor(omega)
    index_a = torch.from_numpy(np.array(pair_index_a, dtype=np.int64))
    index_b = torch.from_numpy(np.array(pair_index_b, dtype=np.int64))
    n_images, n_pairs = len(rows), len(index_a)
    if len(scores) != n_images or not (
        len(index_b) == len(t_tensor) == len(omega_tensor) == n_pairs
    ):
        raise ValueError("distill_full: inconsistent lengths of rows/scores or pair arrays")
    if use_pair and n_pairs == 0:
        log.info("no teacher pairs: the pair term is off")
        use_pair = False
    if not (use_point or use_pair):
        raise ValueError("distill_full needs the point term, the pair term or both")
    steps = max(1, math.ceil((n_images if use_point else n_pairs) / batch_size))
    device = precision.device

    with deterministic(seed) as generator:
        model = fresh_student(backbone)
        if use_point:
            with torch.no_grad():
                model.head.output.bias.fill_(float(scores.mean()))
        model = on_device(model, inputs, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scaler = precision.scaler()
        history = []
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            image_batches = shuffled_batches(n_images, steps, generator)
            pair_batches = shuffled_batches(n_pairs, steps, generator)
            with _timed(f"distill epoch {epoch}", n_images + 2 * n_pairs):
                for images, pairs in zip(image_batches, pair_batches, strict=True):
                    images = images if use_point else images[:0]
                    pairs = pairs if use_pair else pairs[:0]
                    if len(images) == 0 and len(pairs) == 0:
                        continue
                    batch_rows = torch.cat([images, index_a[pairs], index_b[pairs]])
                    batch = inputs.to_model(
                        inputs.batch(rows[batch_rows.numpy()], generator), device
                    )
                    sizes = [len(images), len(pairs), len(pairs)]

                    def loss_of(outputs: torch.Tensor, images=images, pairs=pairs, sizes=sizes):
                        s, s_a, s_b = torch.split(outputs, sizes)
                        return distill_loss(
                            s,
                            scores[images].to(device),
                            s_a,
                            s_b,
                            t_tensor[pairs].to(device),
                            omega_tensor[pairs].to(device),
                            lambda_dis,
                            use_point=use_point,
                            use_pair=use_pair,
                            use_omega=use_omega,
                        )

                    losses.append(
                        optimise_step(model, optimizer, scaler, precision, batch, loss_of)
                    )
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else float("nan"),
                    "teacher_srcc": float("nan"),
                    "pair_agreement": float("nan"),
                }
            )
    if history:
        features = embed_cached(model, inputs, rows, batch_size, precision)
        predicted = predict(cpu_copy(model.head), features)
        history[-1]["teacher_srcc"] = srcc(predicted, teacher_scores)
        history[-1]["pair_agreement"] = pair_agreement(
            predicted, index_a.numpy(), index_b.numpy(), t_ab
        )
        log.info("distilled %d epochs: %s", epochs, history[-1])
    frame = pd.DataFrame(history, columns=["epoch", "loss", "teacher_srcc", "pair_agreement"])
    return model.eval(), frame


def calibrate_full(
    distilled: FullStudent,
    inputs: CachedInputs,
    fit_rows: np.ndarray,
    fit_mos: np.ndarray,
    select_rows: np.ndarray,
    select_mos: np.ndarray,
    lambda_cal: float,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    precision: Precision,
) -> tuple[FullStudent, int, pd.DataFrame]:
    """Stage 2 of the full mode: fine-tune the stage-1 model (backbone included) on the MOS of
    the ``fit`` images, selecting the epoch on the ``select`` images as
    :func:`~leaf.student.train.calibrate_head` does (same initialisation, loss, selection rule
    and history columns). Returns the model at the chosen epoch, that epoch and the history."""
    fit_y, select_y = as_tensor(fit_mos), as_tensor(select_mos)
    if len(fit_rows) == 0 or len(fit_rows) != len(fit_y) or len(select_rows) != len(select_y):
        raise ValueError("calibrate_full needs a non-empty fit subset and matching MOS lengths")
    device = precision.device

    def evaluate_select_part(model: FullStudent) -> dict:
        features = embed_cached(model, inputs, select_rows, batch_size, precision)
        return select_part_metrics(cpu_copy(model.head), torch.from_numpy(features), select_y)

    with deterministic(seed) as generator:
        head = CalibratedHead(cpu_copy(distilled.head))
        head.set_mos_scale(float(fit_y.mean()), float(fit_y.std(unbiased=False)))
        target = head.standardise_mos(fit_y)
        model = on_device(FullStudent(copy.deepcopy(distilled.backbone), head), inputs, device)
        fit_features = embed_cached(model, inputs, fit_rows, batch_size, precision)
        slope, intercept = least_squares_affine(
            predict(cpu_copy(head.base), fit_features), target.numpy()
        )
        with torch.no_grad():
            head.affine.weight.fill_(slope)
            head.affine.bias.fill_(intercept)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        scaler = precision.scaler()
        steps = max(1, math.ceil(len(fit_rows) / batch_size))
        selector = EpochSelector()
        selector.record(model, 0, math.nan, evaluate_select_part(model))
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            with _timed(f"calibrate epoch {epoch}", len(fit_rows)):
                for batch_rows in shuffled_batches(len(fit_rows), steps, generator):
                    if len(batch_rows) == 0:
                        continue
                    batch = inputs.to_model(
                        inputs.batch(fit_rows[batch_rows.numpy()], generator), device
                    )
                    batch_target = target[batch_rows].to(device)
                    losses.append(
                        optimise_step(
                            model,
                            optimizer,
                            scaler,
                            precision,
                            batch,
                            lambda out, y=batch_target: calibration_loss(out, y, lambda_cal),
                            standardised=True,
                        )
                    )
            metrics = evaluate_select_part(model)
            selector.record(model, epoch, float(np.mean(losses)), metrics)

    chosen_epoch, frame = selector.finish(model, len(fit_rows), len(select_rows))
    return model.cpu().eval(), chosen_epoch, frame
