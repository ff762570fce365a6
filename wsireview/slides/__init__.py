"""Slides: open (OpenSlide or plain image), thumbnail, tissue mask, patch grid, patch reading."""

from wsireview.slides.reader import Resolution, SlideFile, SlideError, open_slide

__all__ = ["Resolution", "SlideFile", "SlideError", "open_slide"]
