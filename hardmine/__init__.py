"""hardmine: hard-example mining for SpeechBrain training recipes."""

__version__ = "0.1.0"
