"""After training: the trained model in a form to ship (a TensorFlow SavedModel for TF Serving,
export.py) and batch inference over any number of images (predict.py), both from a --model_dir.

Above training (it reads what a run leaves: model.keras, class_names.json, metrics.json) and
beside it; nothing in training imports it.
"""
