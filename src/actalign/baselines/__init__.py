"""The paper's peers (Table 2) on the same frames: X-CLIP and video LLMs.

    from actalign.baselines.xclip import XClip            # video-text logits of each candidate
    from actalign.baselines.vlm import LocalVLM, ServerVLM, parse_vlm_spec

Each model loads lazily (torch, transformers, openai are imported by the module that needs them).
"""
