"""Embedded data: speech-like corpora generated in the real corpora's layouts.

- :mod:`~hardmine.synthetic.mixtures`: speech-like sources and mixtures of controlled difficulty;
- :mod:`~hardmine.synthetic.layouts`: WSJ0-mix and LibriMix folder layouts;
- :mod:`~hardmine.synthetic.gsc`: a Google Speech Commands stand-in.
"""
