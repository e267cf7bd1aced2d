"""Model files as data: a Keras 3 `.keras` file checked for code before Keras builds it, and ONNX graphs (their
interface, surgery, external weights, the versions the installed ONNX Runtime reads). What a bundle's model is, read
and refused safely; building bundles from them is `model.convert`'s, running them `model.inference`'s.
"""
