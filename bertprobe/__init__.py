"""bertprobe: fine-tune a pre-trained encoder, or freeze it and probe its layers, and measure both."""

__version__ = "0.1.0"
