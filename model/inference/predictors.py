"""Inference over fixed-size batches of the preprocessing's pixels, keeping the device busy: Keras models on whichever
Keras backend is selected, ONNX models on ONNX Runtime.

`make_predictor(bundle)` gives the right one; both take pixel batches (n, size, size, 1) and apply the contract's
value stage (`model.preprocess.model_input`) first, and both give float32 scores (n, classes), or with
`embeddings=True` the pair (scores, penultimate features (n, features)). `predict(bundle, images)` gives the scores of
ROI images of any size, preprocessed here, through the same predictor.

For Keras models each batch goes through one compiled call (`tf.function`, `jax.jit`; eager modules on torch),
and the next batch is dispatched before the previous batch's scores are fetched: on a GPU the device computes batch
n while the host assembles batch n+1 and copies it over, so neither waits for the other. Batches of the default
contract are uint8 (the model casts on the device), four times less to copy than float32. Batch shapes should come
from a small set (e.g. a fixed size, and powers of two for a last partial batch), since each new shape compiles once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from model.bundle import Bundle, BundleError, model_runtime
from model.preprocess import PreprocessConfig, model_input, preprocess_into

Tag = TypeVar("Tag")
#: What a predictor gives per batch: the scores, or (scores, embeddings) with `embeddings=True`.
Outputs = np.ndarray | tuple[np.ndarray, np.ndarray]


class Predictor:
    """Scores (float32, (n, classes)) of a Keras model on pixel batches, one batch in flight while the next is
    prepared; with `embeddings` also the input of its last Dense layer (the penultimate features)."""

    def __init__(
        self,
        model: Any,
        config: PreprocessConfig | None = None,
        *,
        jit_compile: bool | None = None,
        embeddings: bool = False,
    ) -> None:
        import keras

        self.backend = keras.backend.backend()
        self.config, self.embeddings = config, embeddings
        compiled = embedding_model(model) if embeddings else model
        self._dispatch, self._fetch = _compiled(compiled, self.backend, jit_compile)

    def run(self, batches: Iterable[tuple[np.ndarray, Tag]]) -> Iterator[tuple[np.ndarray, Tag]]:
        """For each (inputs, tag), in order: (scores of every row of `inputs`, tag).

        `batches` is consumed lazily, one ahead of the results: batch n+1 is taken and dispatched before batch n's
        scores are fetched.
        """
        pending: tuple[Any, Tag] | None = None
        for inputs, tag in batches:
            handle = self._dispatch(self._values(inputs))
            if pending is not None:
                yield self._scores(pending[0]), pending[1]
            pending = (handle, tag)
        if pending is not None:
            yield self._scores(pending[0]), pending[1]

    def predict(self, inputs: np.ndarray) -> Outputs:
        """Scores (and embeddings) of one batch, synchronously."""
        return self._scores(self._dispatch(self._values(inputs)))

    def _values(self, pixels: np.ndarray) -> np.ndarray:
        return pixels if self.config is None else model_input(pixels, self.config)

    def _scores(self, handle: Any) -> Outputs:
        if self.embeddings:
            scores, features = handle
            return self._array(scores), self._array(features)
        return self._array(handle)

    def _array(self, handle: Any) -> np.ndarray:
        return np.asarray(self._fetch(handle), dtype=np.float32)


class OnnxPredictor(Predictor):
    """The same interface for an ONNX model on ONNX Runtime (`model.formats.onnx_model.OnnxModel.session`).

    A graph with a fixed batch size gets exactly that many rows per call (the last chunk padded with zeros).
    """

    def __init__(
        self, model: Any, config: PreprocessConfig, *, embeddings: bool = False, threads: int | None = None
    ) -> None:
        if embeddings and not model.has_embeddings:
            raise BundleError("the ONNX model of this bundle has no embedding output: re-import it with --embedding")
        self.backend = "onnxruntime"
        self.config, self.embeddings = config, embeddings
        session = model.session(threads)
        names = list(model.output_names[: 2 if embeddings else 1])
        dtype, name, fixed = model.input_dtype, model.input_name, model.input_shape[0]

        def dispatch(inputs: np.ndarray) -> list[np.ndarray]:
            inputs = inputs.astype(dtype, copy=False)
            if fixed is None or len(inputs) == fixed:
                return session.run(names, {name: inputs})
            chunks = []
            for start in range(0, len(inputs), fixed):
                chunk = inputs[start : start + fixed]
                padded = np.zeros((fixed, *chunk.shape[1:]), dtype) if len(chunk) < fixed else chunk
                padded[: len(chunk)] = chunk
                chunks.append([output[: len(chunk)] for output in session.run(names, {name: padded})])
            return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]

        self._dispatch = lambda inputs: dispatch(inputs) if embeddings else dispatch(inputs)[0]
        self._fetch = np.asarray


def make_predictor(bundle: Any, *, embeddings: bool = False, threads: int | None = None) -> Predictor:
    """The predictor of a bundle's model: ONNX Runtime for an ONNX model (`threads` for its pool), else Keras."""
    if model_runtime(bundle.model) == "onnx":
        return OnnxPredictor(bundle.model, bundle.preprocess, embeddings=embeddings, threads=threads)
    return Predictor(bundle.model, bundle.preprocess, embeddings=embeddings)


def predict(bundle: Bundle, images: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Class probabilities float32 (n, n_classes) for uint8 2-D ROIs, in `bundle.classes` order.

    Preprocessing fills one reused batch buffer, so memory stays bounded for any number of images; the model
    runs through the same predictor as classification (`make_predictor`), made on the first call and kept in
    `bundle.predictor`.
    """
    if bundle.predictor is None:
        bundle.predictor = make_predictor(bundle)
    out = np.empty((len(images), len(bundle.classes)), dtype=np.float32)
    size = bundle.preprocess.size
    buffer = np.empty((min(batch_size, len(images)), size, size, 1), dtype=bundle.preprocess.pixel_dtype)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = preprocess_into(chunk, bundle.preprocess, buffer[: len(chunk)])
        out[start : start + len(chunk)] = bundle.predictor.predict(batch)
    return out


def embedding_model(model: Any) -> Any:
    """The Keras model with a second output: the input of its last Dense layer (the penultimate features).

    BundleError when the model has no Dense layer at its top level (e.g. a whole model nested as one layer).
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise BundleError(f"model {model.name} has no Dense layer whose input could be its embeddings")
    return keras.Model(model.inputs, [model.outputs[0], dense[-1].input], name=f"{model.name}_embeddings")


def _compiled(model: Any, backend: str, jit_compile: bool | None) -> tuple[Callable[[np.ndarray], Any], Callable]:
    """(dispatch: inputs -> device handle, fetch: handle -> numpy) for the backend."""
    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile is None:
            jit_compile = bool(tf.config.list_logical_devices("GPU"))  # XLA pays off on GPUs
        # a Keras model's call is already graph code: AutoGraph has nothing to convert (and warns about lambdas)
        function = tf.function(
            lambda x: model(x, training=False), jit_compile=jit_compile, reduce_retracing=True, autograph=False
        )
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
