"""Inference over fixed-size uint8 batches, keeping the device busy, on whichever Keras backend is selected.

Each batch goes through one compiled call (`tf.function`, `jax.jit`; eager modules on torch), and the next batch is
dispatched before the previous batch's scores are fetched: on a GPU the device computes batch n while the host
assembles batch n+1 and copies it over, so neither waits for the other. Batches are uint8 (the model casts on the
device), four times less to copy than float32. Batch shapes should come from a small set (e.g. a fixed size, and
powers of two for a last partial batch), since each new shape compiles once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

Tag = TypeVar("Tag")


class Predictor:
    """Scores (float32, (n, classes)) of uint8 input batches, with one batch in flight while the next is prepared."""

    def __init__(self, model: Any, *, jit_compile: bool | None = None) -> None:
        import keras

        self.backend = keras.backend.backend()
        self._dispatch, self._fetch = _compiled(model, self.backend, jit_compile)

    def run(self, batches: Iterable[tuple[np.ndarray, Tag]]) -> Iterator[tuple[np.ndarray, Tag]]:
        """For each (inputs, tag), in order: (scores of every row of `inputs`, tag).

        `batches` is consumed lazily, one ahead of the results: batch n+1 is taken and dispatched before batch n's
        scores are fetched.
        """
        pending: tuple[Any, Tag] | None = None
        for inputs, tag in batches:
            handle = self._dispatch(inputs)
            if pending is not None:
                yield self._scores(pending[0]), pending[1]
            pending = (handle, tag)
        if pending is not None:
            yield self._scores(pending[0]), pending[1]

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Scores of one batch, synchronously."""
        return self._scores(self._dispatch(inputs))

    def _scores(self, handle: Any) -> np.ndarray:
        return np.asarray(self._fetch(handle), dtype=np.float32)


def _compiled(model: Any, backend: str, jit_compile: bool | None) -> tuple[Callable[[np.ndarray], Any], Callable]:
    """(dispatch: inputs -> device handle, fetch: handle -> numpy) for the backend."""
    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile is None:
            jit_compile = bool(tf.config.list_logical_devices("GPU"))  # XLA pays off on GPUs
        function = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True)
        return function, lambda handle: handle.numpy()
    if backend == "jax":
        import jax

        trainable = [variable.value for variable in model.trainable_variables]
        fixed = [variable.value for variable in model.non_trainable_variables]

        @jax.jit
        def forward(trainable: list, fixed: list, x: Any) -> Any:
            outputs, _ = model.stateless_call(trainable, fixed, x, training=False)
            return outputs

        return (lambda x: forward(trainable, fixed, x)), np.asarray
    if backend == "torch":
        import keras
        import torch

        def dispatch(x: np.ndarray) -> Any:
            with torch.no_grad():
                return model(keras.ops.convert_to_tensor(x), training=False)

        return dispatch, keras.ops.convert_to_numpy
    return model.predict_on_batch, np.asarray
