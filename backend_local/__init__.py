"""Gen3D local backend: the image-to-3D pipeline, its engines, the CLI and the stdio worker."""
