"""Training a bundle: labelled data split by group (`data`), the prepared, sharded training set it streams from
(`prepared`), the training loop (`train`), evaluation (`evaluate`) and per-class thresholds fitted on the validation
split (`thresholds`; applying thresholds is `model.decision`'s). Classification imports none of it.
"""
