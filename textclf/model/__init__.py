"""Model: the architectures, their custom layers, training, and the registry of model versions.

``architectures`` builds each model by name, ``layers`` holds the custom Keras layers (the only
module that imports TensorFlow at import), ``data`` loads and splits labeled data, ``train`` is the
``train`` stage, ``predict`` runs a model on texts, ``registry`` stores and loads versions.
"""
