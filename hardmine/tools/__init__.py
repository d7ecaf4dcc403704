"""Command-line tools around the recipes (each runs with ``python -m``).

- :mod:`~hardmine.tools.variants`: train several variants of a recipe under equal conditions;
- :mod:`~hardmine.tools.compare`: one table and plots over variants and seeds;
- :mod:`~hardmine.tools.hardest`: which training examples a mining sampler favours;
- :mod:`~hardmine.tools.demo`: ``make demo``.
"""
