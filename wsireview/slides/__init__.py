"""Slides: open (OpenSlide or plain image), thumbnail, tissue mask, patch grid, patch reading."""

from wsireview.slides.reader import Resolution, Slide, SlideError, open_slide

__all__ = ["Resolution", "Slide", "SlideError", "open_slide"]
