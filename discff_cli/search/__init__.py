"""The search stage: CLIP/FAISS shortlist, Discffusion rerank, fusion of the two orders.

request.py     SearchRequest, and `search_request`: the one check of a request, whichever front end sent it
pipeline.py    the one path every front end calls (CLI, `--queries`, service, Python API), and the one
               search document (`search_document`: what `discff search --json` prints)
rerank.py      "rerank this head of a shortlist for this query" with one loaded scorer
fusion.py      CLIP score + rerank score -> the final order
ray.py         the rerank stage of many queries on a pool of Ray actors
query_file.py  `search --queries FILE`: one query per line or JSON Lines

May import: engine/, render/ (never the reverse), index/, and the shared modules at the top of
discff_cli (errors, inputs, options' parsing helpers, clip_resolve). Never commands/ or service/.
"""
