"""A small classification task with redundancy, a long tail and label noise, and a numpy MLP.

The data: `n_classes * modes_per_class` Gaussian modes in `dim` dimensions whose popularity
follows a Zipf law, so that a few modes hold most of the samples (redundancy) and many hold a
handful (the tail). A share of the training labels is flipped to another class (noise); the test
set is clean and holds the same number of points per mode, so that every mode's accuracy is
measured with the same precision. Accuracy is then reported under the training distribution
(each mode weighted by its popularity) and on the tail (the mean over the rarest half of modes).

The model: a two-hidden-layer ReLU MLP trained with Adam, in plain numpy so that the benchmark
needs no torch. Its second hidden layer is the embedding GRACE builds its k-NN graph on, and
the per-sample norm of the last layer's gradient is the importance score, the setting of the
GRACE paper (arXiv 2604.11810) scaled down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """The knobs of the synthetic task; the defaults are the benchmark's main setting."""

    n_train: int = 20_000
    n_classes: int = 10
    modes_per_class: int = 8
    dim: int = 16
    zipf_exponent: float = 1.1
    label_noise: float = 0.15
    mode_spread: float = 1.2
    test_per_mode: int = 100
    class_imbalance: float = 1.0  # most / least popular class mass; 1 keeps classes even


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticTask:
    """x_train (N, d), y_train (N,) noisy labels, y_clean (N,), mode_train (N,);
    x_test (T, d), y_test (T,), mode_test (T,); mode_weight (M,) popularity summing to 1;
    tail_modes (M,) bool, the rarest half."""

    x_train: F32
    y_train: I64
    y_clean: I64
    mode_train: I64
    x_test: F32
    y_test: I64
    mode_test: I64
    mode_weight: npt.NDArray[np.float64]
    tail_modes: npt.NDArray[np.bool_]

    @property
    def n_classes(self) -> int:
        return int(self.y_test.max()) + 1


def make_task(spec: TaskSpec, seed: int) -> SyntheticTask:
    """Draw one task; the same spec and seed give the same arrays."""
    rng = np.random.default_rng([seed, 0x7A5C])
    n_modes = spec.n_classes * spec.modes_per_class
    mode_class = np.repeat(np.arange(spec.n_classes), spec.modes_per_class)  # (M,)
    centres = rng.normal(size=(n_modes, spec.dim)) / np.sqrt(spec.dim) * 2.0  # (M, d)
    # Zipf over a random order of modes, so that rare modes belong to every class.
    ranks = rng.permutation(n_modes) + 1
    popularity = ranks.astype(np.float64) ** -spec.zipf_exponent
    class_mass = spec.class_imbalance ** -(np.arange(spec.n_classes) / max(1, spec.n_classes - 1))
    popularity *= class_mass[mode_class]
    popularity /= popularity.sum()

    counts = rng.multinomial(spec.n_train - n_modes, popularity) + 1  # every mode exists
    mode_train = np.repeat(np.arange(n_modes), counts)
    x_train = _draw(rng, centres, mode_train, spec)
    y_clean = mode_class[mode_train]
    y_train = y_clean.copy()
    flip = rng.random(spec.n_train) < spec.label_noise
    shift = rng.integers(1, spec.n_classes, size=int(flip.sum()))
    y_train[flip] = (y_clean[flip] + shift) % spec.n_classes

    mode_test = np.repeat(np.arange(n_modes), spec.test_per_mode)
    x_test = _draw(rng, centres, mode_test, spec)
    tail = popularity < np.median(popularity)
    perm = rng.permutation(spec.n_train)  # no order leaks into batches or ids
    return SyntheticTask(
        x_train=x_train[perm],
        y_train=y_train[perm].astype(np.int64),
        y_clean=y_clean[perm].astype(np.int64),
        mode_train=mode_train[perm].astype(np.int64),
        x_test=x_test,
        y_test=mode_class[mode_test].astype(np.int64),
        mode_test=mode_test.astype(np.int64),
        mode_weight=popularity,
        tail_modes=tail,
    )


def _draw(
    rng: np.random.Generator, centres: npt.NDArray[np.float64], modes: I64, spec: TaskSpec
) -> F32:
    noise = rng.normal(size=(modes.shape[0], spec.dim)) * spec.mode_spread / np.sqrt(spec.dim)
    points: F32 = (centres[modes] + noise).astype(np.float32)
    return points


@dataclass(slots=True)
class Mlp:
    """in -> hidden -> embed -> classes, ReLU, Adam; all parameters float32."""

    params: dict[str, F32]
    moments: dict[str, tuple[F32, F32]] = field(default_factory=dict)
    step: int = 0

    @classmethod
    def create(cls, dim: int, hidden: int, embed: int, n_classes: int, seed: int) -> Mlp:
        rng = np.random.default_rng([seed, 0x4D4C50])
        shapes = {"w1": (dim, hidden), "w2": (hidden, embed), "w3": (embed, n_classes)}
        params: dict[str, F32] = {}
        for name, (fan_in, fan_out) in shapes.items():
            # He initialisation keeps ReLU activations at a stable scale.
            params[name] = (rng.normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(
                np.float32
            )
            params["b" + name[1:]] = np.zeros(fan_out, dtype=np.float32)
        return cls(params)

    def copy(self) -> Mlp:
        return Mlp(
            {k: v.copy() for k, v in self.params.items()},
            {k: (m.copy(), v.copy()) for k, (m, v) in self.moments.items()},
            self.step,
        )

    def forward(self, x: F32) -> tuple[F32, F32, F32]:
        """(hidden (B, H), embed (B, E), logits (B, C))."""
        p = self.params
        h1 = np.maximum(x @ p["w1"] + p["b1"], 0.0)
        h2 = np.maximum(h1 @ p["w2"] + p["b2"], 0.0)
        return h1, h2, h2 @ p["w3"] + p["b3"]

    def train_step(self, x: F32, y: I64, weights: F32, lr: float) -> F32:
        """One Adam step on the weighted mean cross-entropy; returns the per-sample losses."""
        p = self.params
        h1, h2, logits = self.forward(x)
        probs = _softmax(logits)  # (B, C)
        rows = np.arange(y.shape[0])
        losses = -np.log(np.maximum(probs[rows, y], 1e-12))
        g = probs
        g[rows, y] -= 1.0
        g *= (weights / weights.sum())[:, None]  # d(mean loss)/d(logits), (B, C)
        grads = {"w3": h2.T @ g, "b3": g.sum(axis=0)}
        g2 = (g @ p["w3"].T) * (h2 > 0)  # (B, E)
        grads |= {"w2": h1.T @ g2, "b2": g2.sum(axis=0)}
        g1 = (g2 @ p["w2"].T) * (h1 > 0)  # (B, H)
        grads |= {"w1": x.T @ g1, "b1": g1.sum(axis=0)}
        self._adam(grads, lr)
        return losses.astype(np.float32)

    def _adam(self, grads: dict[str, F32], lr: float) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.step += 1
        c1 = 1.0 - beta1**self.step
        c2 = 1.0 - beta2**self.step
        for name, grad in grads.items():
            m, v = self.moments.get(name, (np.zeros_like(grad), np.zeros_like(grad)))
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            self.moments[name] = (m, v)
            self.params[name] -= (lr * (m / c1) / (np.sqrt(v / c2) + eps)).astype(np.float32)


def _softmax(logits: F32) -> F32:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F32 = e / e.sum(axis=1, keepdims=True)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Scores:
    """What one scoring pass returns for the scored ids: importance, loss, embedding (m, E)."""

    importance: F32
    loss: F32
    embedding: F32


def score_samples(model: Mlp, x: F32, y: I64) -> Scores:
    """Per-sample last-layer gradient norm ||softmax - onehot|| * ||(h, 1)||, loss, embedding.

    The last layer's gradient for one sample is the outer product of (h, 1) and (p - y), so its
    Frobenius norm factorises exactly; no per-sample backward pass is needed.
    """
    _, h2, logits = model.forward(x)
    probs = _softmax(logits)
    rows = np.arange(y.shape[0])
    loss = -np.log(np.maximum(probs[rows, y], 1e-12))
    residual = probs
    residual[rows, y] -= 1.0
    norm = np.linalg.norm(residual, axis=1) * np.sqrt((h2 * h2).sum(axis=1) + 1.0)
    return Scores(norm.astype(np.float32), loss.astype(np.float32), h2.astype(np.float32))


@dataclass(frozen=True, slots=True)
class Accuracy:
    overall: float  # under the training distribution: modes weighted by popularity
    tail: float  # mean over the rarest half of modes
    balanced: float  # mean over all modes


def evaluate(model: Mlp, task: SyntheticTask) -> Accuracy:
    _, _, logits = model.forward(task.x_test)
    correct = (logits.argmax(axis=1) == task.y_test).astype(np.float64)
    n_modes = task.mode_weight.shape[0]
    per_mode = np.bincount(task.mode_test, weights=correct, minlength=n_modes) / np.bincount(
        task.mode_test, minlength=n_modes
    )
    return Accuracy(
        overall=float(per_mode @ task.mode_weight),
        tail=float(per_mode[task.tail_modes].mean()),
        balanced=float(per_mode.mean()),
    )
