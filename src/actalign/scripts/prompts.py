"""Prompt strategies of the paper, as versioned templates.

Every generated script records its strategy, model, temperature and prompt version, so changing a
template (bump its version) never silently mixes old and new scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Strategy:
    name: str
    version: str
    temperature: float
    instructions: str
    min_steps: int
    max_steps: int
    max_words: int  # per step; a sanity bound, not a style rule

    def render(self, domain: str, actions: list[str]) -> str:
        listed = "\n".join(f"- {a}" for a in actions)
        return (
            f"{self.instructions.format(domain=domain)}\n\n"
            f"Actions in {domain}:\n{listed}\n\n"
            'Answer with one JSON object and nothing else: {"actions": {"<action name exactly as '
            'given>": ["step 1", "step 2", ...], ...}} with one entry per action above.'
        )


CONTEXT_RICH = Strategy(
    name="context-rich",
    version="context-rich/1",
    temperature=0.2,
    instructions=(
        "You describe fine-grained actions in {domain} for a system that matches text to video "
        "frames. Decompose each action below into its ordered sequence of visually observable "
        "steps, the way they appear on camera from start to finish. Use as many steps as the "
        "action needs (usually 4 to 6). Each step is one self-contained sentence of 10 to 15 "
        "words that names the people, the objects, the body parts involved and the sport "
        "({domain}), so that it could match a single frame on its own. No numbering, no "
        "commentary, no steps that cannot be seen."
    ),
    min_steps=2,
    max_steps=12,
    max_words=40,
)

SHORT_FIXED = Strategy(
    name="short-fixed",
    version="short-fixed/1",
    temperature=1.0,
    instructions=(
        "Decompose each action in {domain} below into exactly 10 ordered, atomic, visually "
        "distinctive sub-actions of 2 to 3 words each. No numbering, no commentary."
    ),
    min_steps=10,
    max_steps=10,
    max_words=6,
)

# the paper's Table 3 ablation and a Table 4 row use the context-rich prompt sampled at T = 1.0
CONTEXT_RICH_T1 = replace(CONTEXT_RICH, name="context-rich-t1", temperature=1.0)

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (CONTEXT_RICH, CONTEXT_RICH_T1, SHORT_FIXED)}
DEFAULT_STRATEGY = CONTEXT_RICH.name
