"""Task support for the recipes: data pipelines, training Brains and metrics.

- :mod:`~hardmine.tasks.separation`: speech separation (WSJ0Mix, LibriMix);
- :mod:`~hardmine.tasks.kws`: keyword spotting (Google Speech Commands);
- :mod:`~hardmine.tasks.sep_metrics`, :mod:`~hardmine.tasks.kws_metrics`: test metrics;
- :mod:`~hardmine.tasks.manifest`: shared pieces of the separation preparations;
- :mod:`~hardmine.tasks.audio`: audio loading that flags broken files.
"""
