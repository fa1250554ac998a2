"""Measuring the reranker: `discff eval`, the demo gallery, and the public benchmarks' loaders.

evaluate.py   score every pair an eval file needs, then metrics (accuracy, R@k, Winoground, McNemar)
items.py      reading and validating eval JSONL files
gallery.py    does reranking beat CLIP on a gallery whose truth is known (what `discff demo` prints)
stats.py      the statistics every report uses: Wilson intervals, exact McNemar (training's checks too)
datasets/     Winoground, ARO, SugarCrepe in the layouts their authors publish, as eval items

May import: search/ (the gallery reranks through the one rank path), engine/, render/, index/
and the shared top-level modules. Never commands/ or service/. (The top-level `benchmarks/`
folder is speed and measurement scripts, not part of the package.)
"""
