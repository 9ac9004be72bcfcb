"""Learned single-image shape model for the built-in engine: procedural training data, network, training and inference."""
