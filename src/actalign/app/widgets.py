"""Widgets the page's tabs share."""

from __future__ import annotations


def query_inputs(prefix: str, example: str) -> tuple:
    """The domain and candidate-action boxes of a tab (element ids `<prefix>-domain`, `-candidates`)."""
    import gradio as gr

    domain = gr.Textbox(label="Domain", placeholder="e.g. basketball", elem_id=f"{prefix}-domain")
    candidates = gr.Textbox(
        label="Candidate actions",
        info="one per line",
        lines=4,
        placeholder=example,
        elem_id=f"{prefix}-candidates",
    )
    return domain, candidates
