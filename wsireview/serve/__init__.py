"""`wsireview serve`: the slide viewer in the browser, a thin web layer over the domain functions.

OpenSeadragon over Deep Zoom tiles, overlays in level-0 pixels, triage recording verdicts through
the same function the terminal app uses. Nothing outside this package imports it.
"""
