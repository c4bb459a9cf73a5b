"""Image encoder: the Hiera trunk and the FPN neck that turns its stages into SAM 2 features."""
