"""Output for people and pipelines: tables and JSON, heat-map panels, the explain sheet.

output.py       rich tables on stdout (80 columns, no cut words), JSON (`to_json`: the one serialisation)
progress.py     the one progress bar on stderr (the engine reports through a callback and never imports it)
heatmap.py      maps over images as PNG panels with a colour scale (Pillow only)
explanation.py  one pair's maps (`discff explain`, the service's /explain) as a sheet and a document

May import: engine/ (explanation reads its maps), index/ for image reading, errors. Nothing in
search/, evaluation/, commands/ or service/.
"""
