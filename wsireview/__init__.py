"""wsireview: keyboard-first review of whole-slide images, with a model that learns from the reviewer."""

__version__ = "0.1.0"
