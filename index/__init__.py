"""First stage of discff: OpenCLIP embeddings in a FAISS index. Knows nothing of diffusion."""
