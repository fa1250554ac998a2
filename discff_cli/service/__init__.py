"""`discff serve`: the search service and its web page.

worker.py   one thread owns the Searcher (CLIP, FAISS, the diffusion model); requests queue for it
queries.py  one /search request as a job: `discff search --json`'s document plus top, rerank, timings
thumbs.py   thumbnails cached under the index directory, keyed by content hash
app.py      the FastAPI application: routes, bearer-token check, errors as one-sentence JSON
static/     the page served at `/` (plain HTML, CSS and JS; no build step, no CDN)

Only app.py imports FastAPI, and only `discff serve` (or a test) imports app.py.
"""
