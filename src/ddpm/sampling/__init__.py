"""From noise to samples: the samplers (one signature), the sampling spec, guidance and
generation in batches with per-image seeds."""
