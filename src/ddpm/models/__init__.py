"""The networks: the U-Net of Ho et al. (and its improved-DDPM options), the 1-D U-Net for
sequences, the MLP for points, and the registry of presets."""
