"""textgan: text-to-image GANs trained at cluster scale."""

__version__ = "0.1.0"
