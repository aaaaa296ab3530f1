"""Full fine-tuning, the "full" student mode (the paper's): backbone and head trained end to end.

Beside the cached-feature "head" mode (:mod:`leaf.student.train`, the CPU default), this mode
trains the whole timm backbone plus a one-output linear :class:`~leaf.student.heads.QualityHead`
from the decoded-image cache (:mod:`leaf.student.image_cache`):

* training inputs: ``RandomResizedCrop(crop)`` (torchvision's default scale/ratio, bilinear,
  antialiased) and a random horizontal flip of the cached images; evaluation inputs: the cached
  image resized to short side ``resize`` (a no-op when it equals the cache's short side) and
  centre-cropped to ``crop``. Pixels are normalised with the backbone's mean/std on the device.
* AdamW over all parameters; mixed precision when ``amp`` (CUDA: bf16 autocast where supported,
  else fp16 with a GradScaler; CPU: bf16 autocast where the CPU supports it); optional
  channels-last memory format.
* stage 1 (:func:`distill_full`): the same loss and batching as head mode
  (:func:`~leaf.student.losses.distill_loss` with the pair term weighted by ω, ablation flags);
  no labels, so the last epoch is kept. Its history has the mean loss of every epoch; the
  teacher SRCC and pair agreement (an extra evaluation pass) only for the last epoch.
* stage 2 (:func:`calibrate_full`): the stage-1 model wrapped in a
  :class:`~leaf.student.heads.CalibratedHead` (least-squares initialised affine layer, MOS
  scale of the fit subset), fine-tuned with :func:`~leaf.student.losses.calibration_loss`; the
  epoch (0 = before fine-tuning) is selected on the held-out ``select`` part exactly as in head
  mode (never on test data).
* the CFT-only baseline (:func:`full_cft_step`): the same stage 2, started from the pretrained
  backbone and a fresh head (:func:`fresh_student`) instead of the stage-1 model.
* deployment: :class:`leaf.student.eval_inputs.EvalTransform` reproduces the evaluation input
  from an image file (the image cache's decoding, then the evaluation crop), for the artifacts
  of :mod:`leaf.deploy`.

Runs are deterministic on CPU for a fixed seed and thread count (all randomness, augmentation
included, comes from the generators seeded by :func:`~leaf.student.train.deterministic`).

Checkpoints have the same keys as head mode's plus ``mode: "full"``, ``state_dict`` (the
fine-tuned backbone, timm key names, no classifier) and ``preprocess``. Because ``state_dict``
is a top-level entry, a full-mode checkpoint is itself a valid ``weights`` path for
:func:`~leaf.student.backbones.create_backbone`, which is how it is loaded again.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from leaf.atomic_io import torch_save_atomic
from leaf.metrics import srcc
from leaf.student.backbones import create_backbone
from leaf.student.eval_inputs import (
    eval_crop,
    normalise,
    pixel_statistic,
    pixels_tensor,
    v2_transforms,
)
from leaf.student.features import bf16_autocast_supported, eval_settings
from leaf.student.heads import (
    CalibratedHead,
    QualityHead,
    as_tensor,
    head_checkpoint,
    head_from_checkpoint,
)
from leaf.student.image_cache import ImageCache
from leaf.student.losses import calibration_loss, distill_loss
from leaf.student.steps import (
    calibration_subset,
    distill_data,
    distill_flags,
    history_records,
    load_checkpoint,
    mos_range,
    split_ids,
    write_evaluation,
)
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

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


class FullStudent(nn.Module):
    """Backbone + quality head: normalised images (batch, 3, H, W) -> scores (batch,)."""

    def __init__(self, backbone: nn.Module, head: QualityHead | CalibratedHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (batch, d) in float32."""
        return self.backbone(images).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (batch,): teacher scale for a quality head, MOS scale for a calibrated one."""
        return self.head(self.features(images))

    def forward_standardised(self, images: torch.Tensor) -> torch.Tensor:
        """Predictions (batch,) in standardised MOS units (calibrated head only)."""
        return self.head.forward_standardised(self.features(images))


def fresh_student(backbone: nn.Module) -> FullStudent:
    """``backbone`` + a fresh one-output linear :class:`~leaf.student.heads.QualityHead` (torch's
    default initialisation, from the global RNG: seed it for a reproducible head)."""
    return FullStudent(backbone, QualityHead(int(backbone.num_features)))


@dataclass(frozen=True)
class Precision:
    """Device and autocast dtype (None: float32) of a run."""

    device: torch.device
    dtype: torch.dtype | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16 (bf16 needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def choose_precision(amp: bool, device: str | torch.device | None = None) -> Precision:
    """CUDA when available (else CPU); with ``amp``: bf16 autocast on CUDA where supported, else
    fp16; on CPU bf16 where the CPU runs it natively, else float32 (logged)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not amp:
        return Precision(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Precision(device, torch.bfloat16 if bf16 else torch.float16)
    if bf16_autocast_supported():
        return Precision(device, torch.bfloat16)
    log.info("bf16 autocast is not supported on this CPU: training in float32")
    return Precision(device)


class CachedInputs:
    """Model inputs cut from the decoded-image cache.

    :meth:`batch` returns uint8 crops (batch, 3, crop, crop): random resized crops and flips for
    training, centre crops for evaluation. :meth:`to_model` moves them to the device and
    normalises them (channels-last when asked).
    """

    def __init__(
        self,
        cache: ImageCache,
        crop: int,
        resize: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels_last: bool = False,
    ):
        self.cache, self.crop, self.resize, self.channels_last = cache, crop, resize, channels_last
        self._v2 = v2_transforms()
        self._mean, self._std = pixel_statistic(mean), pixel_statistic(std)

    def _image(self, row: int) -> torch.Tensor:
        """Cached image ``row`` as a (3, h, w) uint8 tensor."""
        return pixels_tensor(self.cache[row])

    def _train_crop(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random resized crop (torchvision's sampling, with ``generator``) + random flip."""
        height, width = image.shape[-2:]
        area = height * width
        log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
        box = (0, 0, height, width)
        for _ in range(10):
            draws = torch.rand(3, generator=generator).tolist()
            target = area * (CROP_SCALE[0] + draws[0] * (CROP_SCALE[1] - CROP_SCALE[0]))
            ratio = math.exp(log_ratio[0] + draws[1] * (log_ratio[1] - log_ratio[0]))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                box = (top, left, h, w)
                break
        else:  # torchvision's fallback: a centre crop at the clamped ratio
            h, w = height, width
            if width / height < CROP_RATIO[0]:
                h = round(width / CROP_RATIO[0])
            elif width / height > CROP_RATIO[1]:
                w = round(height * CROP_RATIO[1])
            box = ((height - h) // 2, (width - w) // 2, h, w)
        crop = self._v2.functional.resized_crop(
            image,
            *box,
            [self.crop, self.crop],
            interpolation=self._v2.InterpolationMode.BILINEAR,
            antialias=True,
        )
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        return crop

    def batch(
        self, rows: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 crops (len(rows), 3, crop, crop) of cache ``rows``: training crops when a
        ``generator`` is given, evaluation crops otherwise."""
        images = [self._image(int(row)) for row in rows]
        if generator is None:
            crops = [eval_crop(image, self.resize, self.crop) for image in images]
        else:
            crops = [self._train_crop(image, generator) for image in images]
        return torch.stack([crop.contiguous() for crop in crops])

    def to_model(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 crops -> normalised float32 model input on ``device``."""
        batch = normalise(
            batch.to(device, non_blocking=True), self._mean.to(device), self._std.to(device)
        )
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch


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


def _cpu_copy(module: nn.Module) -> nn.Module:
    """A CPU copy of a (small) module, for :func:`~leaf.student.train.predict` on features."""
    return copy.deepcopy(module).cpu()


def _on_device(model: FullStudent, inputs: CachedInputs, device: torch.device) -> FullStudent:
    """``model`` moved to ``device`` (channels-last when the inputs are)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if inputs.channels_last else model


def _optimise(
    model: FullStudent,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: Precision,
    images: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    standardised: bool = False,
) -> float:
    """One optimisation step on ``images``; ``loss_of`` maps the float32 outputs to the loss."""
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
        model = _on_device(model, inputs, device)
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

                    losses.append(_optimise(model, optimizer, scaler, precision, batch, loss_of))
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
        predicted = predict(_cpu_copy(model.head), features)
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
        return select_part_metrics(_cpu_copy(model.head), torch.from_numpy(features), select_y)

    with deterministic(seed) as generator:
        head = CalibratedHead(_cpu_copy(distilled.head))
        head.set_mos_scale(float(fit_y.mean()), float(fit_y.std(unbiased=False)))
        target = head.standardise_mos(fit_y)
        model = _on_device(FullStudent(copy.deepcopy(distilled.backbone), head), inputs, device)
        fit_features = embed_cached(model, inputs, fit_rows, batch_size, precision)
        slope, intercept = least_squares_affine(
            predict(_cpu_copy(head.base), fit_features), target.numpy()
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
                        _optimise(
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


# --- checkpoints and workflow steps -------------------------------------------------------


def preprocess_of(backbone: nn.Module, full: dict) -> dict[str, Any]:
    """The input settings a full-mode model is trained and evaluated with: ``full``'s crop and
    resize (the paper's 224 and 256), where null the backbone's pretrained ones
    (:func:`leaf.student.features.eval_settings`: its input size and floor(size / crop_pct)),
    and the backbone's mean/std."""
    settings = eval_settings(backbone, full.get("crop"))
    return {
        "crop": settings["image_size"],
        "resize": int(full.get("resize") or settings["resize"]),
        "cache_short_side": int(full["cache_short_side"]),
        "mean": settings["mean"],
        "std": settings["std"],
    }


def _inputs(image_cache: str, cache_index: str, preprocess: dict, full: dict) -> CachedInputs:
    return CachedInputs(
        ImageCache.open(image_cache, cache_index),
        crop=int(preprocess["crop"]),
        resize=int(preprocess["resize"]),
        mean=tuple(preprocess["mean"]),
        std=tuple(preprocess["std"]),
        channels_last=bool(full["channels_last"]),
    )


def full_checkpoint(model: FullStudent, **entries: Any) -> dict[str, Any]:
    """A full-mode checkpoint: ``entries`` plus mode, head and the backbone's state dict."""
    state = {
        key: value.detach().cpu().clone() for key, value in model.backbone.state_dict().items()
    }
    return {**entries, "mode": "full", "head": head_checkpoint(model.head), "state_dict": state}


def load_full_model(path: str) -> tuple[FullStudent, dict[str, Any]]:
    """The :class:`FullStudent` saved at ``path`` (in eval mode) and its checkpoint dict."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("mode") != "full":
        raise ValueError(f"{path} is not a full-mode checkpoint (student.mode: full)")
    backbone = create_backbone(checkpoint["backbone"], path)  # reads its "state_dict"
    return FullStudent(backbone, head_from_checkpoint(checkpoint["head"])).eval(), checkpoint


def _training_settings(full: dict, seed: int) -> dict[str, Any]:
    """The optimiser, batching, seed and precision arguments shared by both full-mode stages."""
    return {
        "lr": float(full["lr"]),
        "weight_decay": float(full["weight_decay"]),
        "batch_size": int(full["batch_size"]),
        "seed": int(seed),
        "precision": choose_precision(bool(full["amp"])),
    }


def full_distill_step(
    image_cache: str,
    cache_index: str,
    split: str,
    teacher_points: str,
    teacher_pairs: str,
    model: str,
    seed: int,
    backbone: str,
    weights: str,
    distill: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``distill_full``: stage 1 of the full mode on the scored train images (see
    :func:`~leaf.student.steps.distill_data`). ``distill`` gives lambda_dis and the ablation
    flags, ``full`` the optimiser and input settings (epochs_distill, lr, weight_decay,
    batch_size, amp, channels_last, crop, resize, cache_short_side)."""
    torch.set_num_threads(threads)
    network = create_backbone(backbone, weights)
    preprocess = preprocess_of(network, full)
    inputs = _inputs(image_cache, cache_index, preprocess, full)
    data = distill_data(split, teacher_points, teacher_pairs)
    flags = distill_flags(distill)
    student, history = distill_full(
        network,
        inputs,
        inputs.cache.rows(data.image_ids),
        data.scores,
        data.index_a,
        data.index_b,
        data.t_ab,
        data.omega,
        lambda_dis=float(distill["lambda_dis"]),
        epochs=int(full["epochs_distill"]),
        **_training_settings(full, seed),
        **flags,
    )
    torch_save_atomic(
        full_checkpoint(
            student,
            stage="distill",
            history=history_records(history),
            seed=int(seed),
            backbone=backbone,
            weights=weights,
            preprocess=preprocess,
            full=dict(full),
            n_images=len(data.image_ids),
            n_pairs=len(data.index_a),
            chosen_epoch=int(full["epochs_distill"]),
            **flags,
        ),
        model,
    )


def _calibrate_and_save(
    student: FullStudent,
    preprocess: dict[str, Any],
    backbone: str,
    weights: str,
    distilled: bool,
    *,
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    model: str,
    ratio: float,
    seed: int,
    calibration: dict,
    full: dict,
) -> None:
    """Stage 2 (:func:`calibrate_full`) of ``student`` on the MOS subset of ``ratio``, saved as
    a calibrate checkpoint at ``model``; shared by the distilled student and the CFT-only
    baseline, so that both run exactly the same stage 2."""
    inputs = _inputs(image_cache, cache_index, preprocess, full)
    fit_ids, fit_mos, select_ids, select_mos = calibration_subset(manifest, subsets, ratio)
    calibrated, chosen_epoch, history = calibrate_full(
        student,
        inputs,
        inputs.cache.rows(fit_ids),
        fit_mos,
        inputs.cache.rows(select_ids),
        select_mos,
        lambda_cal=float(calibration["lambda_cal"]),
        epochs=int(full["epochs_calibrate"]),
        **_training_settings(full, seed),
    )
    torch_save_atomic(
        full_checkpoint(
            calibrated,
            stage="calibrate",
            history=history_records(history),
            seed=int(seed),
            ratio=float(ratio),
            backbone=backbone,
            weights=weights,
            preprocess=preprocess,
            full=dict(full),
            distilled=distilled,
            n_fit=len(fit_ids),
            n_select=len(select_ids),
            chosen_epoch=int(chosen_epoch),
            mos_range=mos_range(fit_mos, select_mos),
        ),
        model,
    )


def full_calibrate_step(
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    distilled: str,
    model: str,
    ratio: float,
    seed: int,
    calibration: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``calibrate_full``: stage 2 of the full mode on the MOS subset of ``ratio``, from
    the stage-1 checkpoint ``distilled``. ``calibration`` gives lambda_cal, ``full`` the
    optimiser settings (epochs_calibrate, lr, weight_decay, batch_size, amp, channels_last);
    the input settings are the stage-1 checkpoint's."""
    torch.set_num_threads(threads)
    student, stage1 = load_full_model(distilled)
    _calibrate_and_save(
        student,
        stage1["preprocess"],
        stage1["backbone"],
        stage1["weights"],
        distilled=True,
        image_cache=image_cache,
        cache_index=cache_index,
        manifest=manifest,
        subsets=subsets,
        model=model,
        ratio=ratio,
        seed=seed,
        calibration=calibration,
        full=full,
    )


def full_cft_step(
    image_cache: str,
    cache_index: str,
    manifest: str,
    subsets: str,
    model: str,
    ratio: float,
    seed: int,
    backbone: str,
    weights: str,
    calibration: dict,
    full: dict,
    threads: int = 1,
) -> None:
    """Rule ``calibrate_cft`` of the full mode, the CFT-only baseline: stage 2 alone, exactly as
    :func:`full_calibrate_step` runs it, but from the pretrained ``backbone`` (``weights``, e.g.
    ImageNet) and a fresh one-output head (:func:`fresh_student`, initialised under ``seed``)
    instead of a distilled student. The input settings come from ``full``, as in stage 1. The
    checkpoint (``distilled: False``) is evaluated by :func:`full_evaluate_step` like any other."""
    torch.set_num_threads(threads)
    network = create_backbone(backbone, weights)
    with deterministic(int(seed)):
        student = fresh_student(network)
    _calibrate_and_save(
        student,
        preprocess_of(network, full),
        backbone,
        weights,
        distilled=False,
        image_cache=image_cache,
        cache_index=cache_index,
        manifest=manifest,
        subsets=subsets,
        model=model,
        ratio=ratio,
        seed=seed,
        calibration=calibration,
        full=full,
    )


def full_evaluate_step(
    image_cache: str,
    cache_index: str,
    split: str,
    manifest: str,
    model: str,
    predictions: str,
    metrics: str,
    threads: int = 1,
) -> None:
    """Rule ``evaluate_full``: test-split predictions of a full-mode checkpoint (evaluation
    crops of the image cache, the checkpoint's input and precision settings), written as in
    head mode by :func:`~leaf.student.steps.write_evaluation`."""
    torch.set_num_threads(threads)
    student, checkpoint = load_full_model(model)
    full = checkpoint["full"]
    inputs = _inputs(image_cache, cache_index, checkpoint["preprocess"], full)
    precision = choose_precision(bool(full["amp"]))
    test_ids = split_ids(split, "test")
    features = embed_cached(
        _on_device(student, inputs, precision.device),
        inputs,
        inputs.cache.rows(test_ids),
        int(full["batch_size"]),
        precision,
    )
    predicted = predict(_cpu_copy(student.head), features)
    write_evaluation(test_ids, predicted, manifest, checkpoint, predictions, metrics)
