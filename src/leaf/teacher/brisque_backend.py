"""BRISQUE as the CPU demo's stand-in teacher (a classical no-reference IQA signal, not an MLLM).

BRISQUE (Mittal et al., 2012) fits generalised Gaussians to the mean-subtracted contrast-normalised
(MSCN) coefficients of a grayscale image and of their four neighbour products, at two scales, and
maps the 36 resulting features to a distortion score with a pretrained support-vector regressor
(lower = better, typically 0..100). We use the SVR model shipped with the ``brisque`` PyPI package
(``brisque/models/svm.txt`` + ``normalize.pickle``, loaded with libsvm's ``svmutil``, evaluated
in numpy for bit-reproducible scores, see :class:`BrisqueSVR`) but compute the features
with our own numpy code, which reproduces the package's definitions (``brisque/brisque.py``,
v0.2.0) without its ``float()``-on-array calls that fail on numpy 2.4 and without importing
``requests``. Images are read with PIL, converted to RGB, then to grayscale with
``skimage.color.rgb2gray`` as in the package.

From a BRISQUE score ``b`` to the teacher's raw judgments (``v_min``/``v_max``: the smallest and
largest configured level values, ``v_k`` the value of level word k):

- quality ``q = v_min + (v_max - v_min) * clip((worst - b) / (worst - best), 0, 1)``
  (defaults ``best = 0``, ``worst = 100``; the 5th..95th percentiles of ``b`` are about 0..85 on
  the embedded demo and 6..82 on AGIQA-3K, with extremes of -7 and 121);
- level log-likelihood ``loglik_k = -(q - v_k)^2 / (2 sigma^2)`` (default ``sigma = 0.75``), so
  the softmax over levels is a discretised Gaussian centred on ``q``;
- pair answer log-probs ``logprob_A = log sigmoid((q_a - q_b) / T)`` and
  ``logprob_B = log sigmoid((q_b - q_a) / T)`` (default temperature ``T = 0.5``).

Degenerate images: BRISQUE is undefined when a feature is not finite: on a constant image (zero
local variance everywhere, detected up front by a zero intensity range) and whenever one side of
a coefficient distribution is empty (NaN fit). Such images get uniform level log-likelihoods (the
teacher has no opinion: the score is the mean level value) and every pair involving one gets
``logprob_A = logprob_B = log 0.5`` (``p_A = 0.5``, ``omega = 0``). Their number is logged as a
warning and recorded in :meth:`BrisqueTeacher.provenance`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import multiprocessing
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import optimize, signal, special
from skimage.color import rgb2gray
from tqdm import tqdm

from leaf.images import read_rgb
from leaf.teacher.cache import COUNTS_KEY
from leaf.teacher.levels import Levels

log = logging.getLogger(__name__)

KERNEL_SIZE = 7
KERNEL_SIGMA = 7 / 6
MSCN_C = 1 / 255
N_FEATURES = 36


def brisque_model_dir() -> Path:
    """The ``brisque`` package's ``models`` folder, located without importing the package."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'brisque' package (which ships the BRISQUE SVR model) is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _gaussian_kernel(size: int = KERNEL_SIZE, sigma: float = KERNEL_SIGMA) -> np.ndarray:
    """The package's normalised 2-D Gaussian window (``BRISQUE.gaussian_kernel2d``).

    The operations are kept in the package's order: BRISQUE splits MSCN coefficients by sign,
    and in flat regions those are rounding noise, so a last-bit difference here moves features.
    """
    y, x = np.indices((size, size)) - size // 2
    kernel = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return kernel / np.sum(kernel)


def mscn_coefficients(gray: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (zero-padded 'same' convolutions)."""
    kernel = _gaussian_kernel()
    local_mean = signal.convolve2d(gray, kernel, "same")
    local_sq_mean = signal.convolve2d(gray**2, kernel, "same")
    local_std = np.sqrt(np.abs(local_mean**2 - local_sq_mean))
    return (gray - local_mean) / (local_std + MSCN_C)


def _pair_products(mscn: np.ndarray) -> list[np.ndarray]:
    """MSCN and its horizontal, vertical, main- and secondary-diagonal neighbour products."""
    return [
        mscn,
        mscn[:, :-1] * mscn[:, 1:],
        mscn[:-1, :] * mscn[1:, :],
        mscn[:-1, :-1] * mscn[1:, 1:],
        mscn[1:, :-1] * mscn[:-1, 1:],
    ]


def _phi(alpha: np.ndarray) -> np.ndarray:
    return special.gamma(2 / alpha) ** 2 / (special.gamma(1 / alpha) * special.gamma(3 / alpha))


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit: (alpha, mean, sigma_l, sigma_r), as in the package.

    Non-finite values come out (rather than an exception) when one side is empty.
    """
    x = x.ravel()
    negative = x < 0
    squares = x * x
    n_left = np.count_nonzero(negative)
    with np.errstate(all="ignore"):
        r_hat = (np.sum(np.abs(x)) / x.size) ** 2 / (np.sum(squares) / x.size)
        sigma_l = np.sqrt(np.sum(squares[negative]) / n_left)
        sigma_r = np.sqrt(np.sum(squares[~negative]) / (x.size - n_left))
        gamma = sigma_l / sigma_r
        big_r_hat = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
        if not np.isfinite(big_r_hat):
            return (np.nan, np.nan, float(sigma_l), float(sigma_r))
        alpha = float(optimize.root(lambda z: _phi(z) - big_r_hat, [0.2]).x[0])
        constant = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
        mean = (sigma_r - sigma_l) * constant * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), float(sigma_l), float(sigma_r)


def _scale_features(gray: np.ndarray) -> list[float]:
    """The 18 features of one scale: (alpha, variance) of MSCN, then 4 per neighbour product."""
    features: list[float] = []
    for index, coefficients in enumerate(_pair_products(mscn_coefficients(gray))):
        alpha, mean, sigma_l, sigma_r = aggd_fit(coefficients)
        if index == 0:
            features += [alpha, (sigma_l**2 + sigma_r**2) / 2]
        else:
            features += [alpha, mean, sigma_l**2, sigma_r**2]
    return features


def load_gray(path: str | Path) -> np.ndarray:
    """Read an image (:func:`leaf.images.read_rgb`: upright, 8-bit RGB), then convert it to float
    grayscale in [0, 1]."""
    return rgb2gray(np.asarray(read_rgb(path)))


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (full scale, then half scale by bicubic resize); NaN if flat."""
    if np.ptp(gray) == 0:
        return np.full(N_FEATURES, np.nan)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.asarray(_scale_features(gray) + _scale_features(half), dtype=np.float64)


def image_features(path: str) -> np.ndarray:
    """Features of the image at ``path`` (module-level so worker processes can run it)."""
    return brisque_features(load_gray(path))


def brisque_to_quality(
    scores: np.ndarray, best: float, worst: float, values: Sequence[float]
) -> np.ndarray:
    """``q = v_min + (v_max - v_min) * clip((worst - b) / (worst - best), 0, 1)``; NaN stays NaN."""
    v_min, v_max = min(values), max(values)
    fraction = np.clip((worst - np.asarray(scores, dtype=np.float64)) / (worst - best), 0, 1)
    return v_min + (v_max - v_min) * fraction


def quality_logliks(quality: np.ndarray, values: Sequence[float], sigma: float) -> np.ndarray:
    """(n, K) level log-likelihoods ``-(q - v_k)^2 / (2 sigma^2)``; all zero where q is NaN."""
    quality = np.asarray(quality, dtype=np.float64)[:, None]
    logliks = -((quality - np.asarray(values, dtype=np.float64)[None, :]) ** 2) / (2 * sigma**2)
    return np.where(np.isfinite(quality), logliks, 0.0)


def quality_pair_logprobs(
    quality_a: np.ndarray, quality_b: np.ndarray, temperature: float
) -> np.ndarray:
    """(n, 2) ``log sigmoid(+-(q_a - q_b) / T)``; both log 0.5 where either quality is NaN."""
    diff = (np.asarray(quality_a) - np.asarray(quality_b)) / temperature
    diff = np.where(np.isfinite(diff), diff, 0.0)
    return np.stack([-np.logaddexp(0.0, -diff), -np.logaddexp(0.0, diff)], axis=1)


class BrisqueSVR:
    """The pretrained BRISQUE regressor: features scaled to [-1, 1], then the epsilon-SVR.

    The model is loaded with libsvm's ``svmutil`` and evaluated here in numpy
    (``sum_i coef_i exp(-gamma |x - sv_i|^2) - rho``): libsvm's own prediction sums the support
    vectors in a thread-dependent order, which made repeated scores differ in the last bits.
    """

    def __init__(self, model_dir: str | Path | None = None) -> None:
        from libsvm import svmutil
        from libsvm.svm import kernel_names, svm_forms

        model_dir = Path(model_dir) if model_dir is not None else brisque_model_dir()
        model = svmutil.svm_load_model(str(model_dir / "svm.txt"))
        is_rbf = model.param.kernel_type == kernel_names.RBF
        if model.get_svm_type() != svm_forms.EPSILON_SVR or not is_rbf:
            raise ValueError(f"{model_dir}/svm.txt is not an RBF epsilon-SVR model")
        with open(model_dir / "normalize.pickle", "rb") as handle:
            params = pickle.load(handle)
        self.feature_min = np.asarray(params["min_"], dtype=np.float64)
        self.feature_max = np.asarray(params["max_"], dtype=np.float64)
        self.support_vectors = np.zeros((model.get_nr_sv(), len(self.feature_min)))
        for row, vector in enumerate(model.get_SV()):
            for index, value in vector.items():
                if index > 0:  # libsvm indices start at 1; -1 ends the sparse vector
                    self.support_vectors[row, index - 1] = value
        self.coefficients = np.array([c[0] for c in model.get_sv_coef()], dtype=np.float64)
        self.gamma = float(model.param.gamma)
        self.rho = float(model.rho[0])

    def predict(self, features: np.ndarray) -> float:
        """BRISQUE score of one 36-feature vector (NaN if any feature is non-finite)."""
        features = np.asarray(features, dtype=np.float64)
        if not np.all(np.isfinite(features)):
            return float("nan")
        scaled = -1 + 2.0 / (self.feature_max - self.feature_min) * (features - self.feature_min)
        distances = np.sum((self.support_vectors - scaled) ** 2, axis=1)
        return float(self.coefficients @ np.exp(-self.gamma * distances) - self.rho)


class BrisqueTeacher:
    """TeacherBackend built on BRISQUE scores (a classical IQA signal; see the module docstring).

    Args:
        levels: the configured level words and values.
        best, worst: BRISQUE scores mapped to the best (``v_max``) and the worst (``v_min``) level
            value; scores beyond them are clipped.
        sigma: width, in level-value units, of the Gaussian giving the level log-likelihoods.
        temperature: scale, in level-value units, of the quality difference in pair answers.
        workers: processes computing features (1 = in this process).
        progress: show a tqdm progress bar.
    """

    name = "brisque"

    def __init__(
        self,
        levels: Levels,
        best: float = 0.0,
        worst: float = 100.0,
        sigma: float = 0.75,
        temperature: float = 0.5,
        workers: int = 1,
        progress: bool = True,
    ) -> None:
        if not worst > best:
            raise ValueError(f"BRISQUE is lower-is-better: need worst > best, got {best}, {worst}")
        if sigma <= 0 or temperature <= 0 or workers < 1:
            raise ValueError(
                f"sigma and temperature must be > 0 and workers >= 1, got sigma={sigma}, "
                f"temperature={temperature}, workers={workers}"
            )
        self.levels = levels
        self.best, self.worst = float(best), float(worst)
        self.sigma, self.temperature = float(sigma), float(temperature)
        self.workers = int(workers)
        self.progress = progress
        self._svr: BrisqueSVR | None = None
        self._brisque: dict[str, float] = {}

    @property
    def svr(self) -> BrisqueSVR:
        if self._svr is None:
            self._svr = BrisqueSVR()
        return self._svr

    def _features(self, paths: list[str]) -> Iterable[np.ndarray]:
        if self.workers == 1 or len(paths) < 2:
            yield from map(image_features, paths)
            return
        # fork, not spawn: spawn re-runs the parent's __main__, which for a Snakemake script is
        # the step itself. Each worker keeps OpenCV single-threaded.
        context = multiprocessing.get_context("fork")
        n_processes = min(self.workers, len(paths))
        with context.Pool(n_processes, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            yield from pool.imap(image_features, paths, chunksize=4)

    def brisque_scores(self, paths: Sequence[str]) -> np.ndarray:
        """Raw BRISQUE score per image (NaN for degenerate images), memoised per path."""
        todo = list(dict.fromkeys(str(p) for p in paths if str(p) not in self._brisque))
        if todo:
            degenerate = []
            bar = tqdm(total=len(todo), desc="BRISQUE", unit="img", disable=not self.progress)
            with bar:
                for path, features in zip(todo, self._features(todo), strict=True):
                    score = self.svr.predict(features)
                    if not np.isfinite(score):
                        degenerate.append(path)
                    self._brisque[path] = score
                    bar.update()
            if degenerate:
                log.warning(
                    "%d of %d images are (near-)constant or too small, BRISQUE is undefined "
                    "there: they get uniform level log-likelihoods and p_A = 0.5 in pairs: %s%s",
                    len(degenerate),
                    len(todo),
                    ", ".join(degenerate[:10]),
                    " ..." if len(degenerate) > 10 else "",
                )
        return np.array([self._brisque[str(p)] for p in paths], dtype=np.float64)

    def qualities(self, paths: Sequence[str]) -> np.ndarray:
        """Quality q in [v_min, v_max] per image (NaN for degenerate images)."""
        return brisque_to_quality(
            self.brisque_scores(paths), self.best, self.worst, self.levels.values
        )

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray:
        """(n, K) level log-likelihoods -(q - v_k)^2 / (2 sigma^2); zeros for degenerate images."""
        return quality_logliks(self.qualities(paths), self.levels.values, self.sigma)

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray:
        """(n, 2) answer log-probs log sigmoid(+-(q_a - q_b) / T); log 0.5 if either degenerate."""
        return quality_pair_logprobs(
            self.qualities(paths_a), self.qualities(paths_b), self.temperature
        )

    @property
    def n_degenerate(self) -> int:
        """Number of images judged so far on which BRISQUE is undefined."""
        return int(sum(not np.isfinite(score) for score in self._brisque.values()))

    def provenance(self) -> dict:
        return {
            "backend": self.name,
            "signal": "BRISQUE, a classical no-reference IQA measure (not an MLLM)",
            "brisque_version": importlib.metadata.version("brisque"),
            "libsvm_version": importlib.metadata.version("libsvm-official"),
            "features": "leaf.teacher.brisque_backend (re-implementation of brisque 0.2.0)",
            "mapping": {
                "best": self.best,
                "worst": self.worst,
                "sigma": self.sigma,
                "temperature": self.temperature,
            },
            COUNTS_KEY: {"n_images": len(self._brisque), "n_degenerate": self.n_degenerate},
        }
