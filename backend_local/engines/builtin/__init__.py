"""The built-in engine: shape from the silhouette and shading, textures projected from the image."""
