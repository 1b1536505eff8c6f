"""File formats: images, model files, hub and model-zoo downloads, converters."""
