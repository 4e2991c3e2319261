"""Files out and in: checkpoints, model files, safetensors and diffusers interchange,
output paths."""
