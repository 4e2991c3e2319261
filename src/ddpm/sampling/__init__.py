"""From noise to samples: the samplers (one signature), the sampling spec, guidance, a loaded
model ready to sample, and generation in batches with per-image seeds."""
