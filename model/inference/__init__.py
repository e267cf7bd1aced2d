"""Running a bundle's model: its loading for one runtime (`load`), which runtime runs it ("keras" or "onnx",
`runtimes`), and the predictors that feed it batches (`predictors`). Used by classification workers, evaluation,
training's validation scores and the ONNX conversion's check alike.
"""
