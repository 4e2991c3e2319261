"""Pictures: image grids, curves, scatter plots and the pictures of the diffusion process."""
