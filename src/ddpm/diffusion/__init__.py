"""The diffusion process itself: the noise schedule, the forward process and its posterior, the
parameterisations and losses, timestep sampling and the variational bound."""
