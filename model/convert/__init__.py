"""Models from outside into bundles and back out: Keras 2 (JSON + H5), Keras 3 `.keras` and ONNX imports
(`from_keras2`, `from_keras3`, `from_onnx`, with the checks and provenance they share in `imported`), and a Keras
bundle's ONNX conversion (`to_onnx`: its ONNX twin, or an ONNX bundle). Stands on `model.formats` and
`model.inference` (a conversion is checked by running it).
"""
