"""discff: text-to-image retrieval with an OpenCLIP shortlist and a Discffusion reranker."""

__version__ = "0.1.0"
