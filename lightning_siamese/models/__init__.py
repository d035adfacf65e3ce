"""The models wing (pure torch): backbones, the embedding network, losses, WiSE-FT."""
