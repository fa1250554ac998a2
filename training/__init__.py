"""Prompt-delta tuning, JSONL data, the demo world and the training of the demo models."""
