"""Evaluation: datasets (generic JSONL manifests, ActionAtlas), metrics, the resumable runner."""
