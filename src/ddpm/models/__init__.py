"""The networks: the U-Net of Ho et al. (and its improved-DDPM options), the tutorial's
SimpleUnet, the 1-D U-Net for sequences, the MLP for points, the blocks they share (`layers`),
and the registry of presets (`presets`)."""
