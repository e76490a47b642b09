"""The end-to-end demo on the embedded data (``tools/demo.py`` is its command line): which
pretraining start gives the better detector, measured by fine-tuned AP and an item probe, with
seeds, standard errors and paired differences.

- :mod:`.settings`: starts, data settings (current, few-label) and budgets;
- :mod:`.steps`: the steps as subprocesses of the project's tools, logged, reused when done;
- :mod:`.pipeline`: the whole comparison;
- :mod:`.results`, :mod:`.statistics`: runs -> one row per start, differences with 95 % intervals;
- :mod:`.report`: table, plot, results file.
"""
