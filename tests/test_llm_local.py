"""The in-process writer (`--llm local:DIR`) on a tiny random-weight causal LM saved to disk:
constrained decoding makes even gibberish schema-valid scripts, through the library and the CLI."""

from __future__ import annotations

import json
import re
import time

import pytest

from actalign.cli import main
from actalign.errors import ActAlignError
from actalign.scripts import ScriptStore, make_writer
from actalign.scripts.parse import validate_steps
from actalign.scripts.prompts import CONTEXT_RICH, SHORT_FIXED
from actalign.scripts.schema import step_schema

pytest.importorskip("llguidance", reason="the local-llm extra (llguidance) is not installed")

import torch

from actalign.scripts.local import LocalWriter
from llm_models import build_causal_lm
from media import make_video

ACTIONS = ["Tip-in", "Putback dunk", "Alley-oop Dunk"]


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


def assert_schema_valid(scripts: dict, actions: list[str], strategy) -> None:
    """Exactly the requested actions; each a list of steps the schema and the validator accept."""
    assert list(scripts) == actions
    step = step_schema(strategy)
    for action, steps in scripts.items():
        assert strategy.min_steps <= len(steps) <= strategy.max_steps, (action, steps)
        for s in steps:
            assert re.fullmatch(step["pattern"].strip("^$"), s), s
            assert step["minLength"] <= len(s) <= step["maxLength"]
        assert validate_steps(action, steps, strategy) == (steps, [])


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the writer


@pytest.mark.parametrize("strategy", [SHORT_FIXED, CONTEXT_RICH], ids=["short-fixed", "context-rich"])
def test_random_model_writes_schema_valid_scripts(lm_dir, strategy):
    writer = LocalWriter(str(lm_dir))
    torch.manual_seed(0)
    scripts = writer.write("basketball", ACTIONS, strategy)
    assert_schema_valid(scripts, ACTIONS, strategy)
    assert writer.source == f"local:{lm_dir.resolve()}|json_schema"
    assert writer.last_stats["new_tokens"] > 0


def test_missing_or_extra_keys_are_impossible(lm_dir):
    """Raw answers of several seeds parse as JSON with exactly the requested keys; without the
    constraint the same model does not even produce JSON."""
    constrained = LocalWriter(str(lm_dir))
    free = LocalWriter(str(lm_dir), constrained=False, max_new_tokens=60)
    constrained._load(), free._load()
    messages = [{"role": "user", "content": SHORT_FIXED.render("basketball", ACTIONS[:2])}]
    for seed in range(3):
        torch.manual_seed(seed)
        answer = json.loads(constrained._ask(messages, SHORT_FIXED, ACTIONS[:2]))
        assert list(answer) == ["actions"] and list(answer["actions"]) == ACTIONS[:2]
        assert_schema_valid(answer["actions"], ACTIONS[:2], SHORT_FIXED)
        torch.manual_seed(seed)
        with pytest.raises(json.JSONDecodeError):
            json.loads(free._ask(messages, SHORT_FIXED, ACTIONS[:2]))
    assert free.source.endswith("|prompt")


def test_token_bound(lm_dir):
    writer = LocalWriter(str(lm_dir), max_new_tokens=25)
    torch.manual_seed(0)
    with pytest.raises(ActAlignError, match="bound of 25 new tokens"):
        writer.write("basketball", ACTIONS, SHORT_FIXED)
    assert writer.last_stats["new_tokens"] == 25


def test_context_fills_up(lm_dir, tmp_path):
    probe = LocalWriter(str(lm_dir))
    probe._load()
    n = probe.prompt_ids([{"role": "user", "content": SHORT_FIXED.render("basketball", ACTIONS)}]).shape[1]
    writer = LocalWriter(str(build_causal_lm(tmp_path / "tight", context=n + 10)))
    torch.manual_seed(0)
    with pytest.raises(ActAlignError, match=f"filled its context of {n + 10} tokens"):
        writer.write("basketball", ACTIONS, SHORT_FIXED)
    assert writer.last_stats == {"prompt_tokens": n, "new_tokens": 10, "seconds": pytest.approx(0, abs=5)}


def test_time_bound(lm_dir):
    """A bound far below the time the answer needs: generation stops at it, with a clear error."""
    writer = LocalWriter(str(lm_dir), timeout=0.05)
    writer._load()
    torch.manual_seed(0)
    start = time.monotonic()
    with pytest.raises(ActAlignError, match=r"time bound of 0\.05 s"):
        writer.write("basketball", ACTIONS, CONTEXT_RICH)
    assert time.monotonic() - start < 1.5
    assert writer.last_stats["new_tokens"] > 0 and 0.05 <= writer.last_stats["seconds"] < 1.0


def test_without_chat_template_the_prompt_is_plain_text(tmp_path):
    bare = build_causal_lm(tmp_path / "bare", chat_template=False)
    writer = LocalWriter(str(bare))
    writer._load()
    messages = [{"role": "user", "content": "Decompose each action"}]
    text = writer._tokenizer.decode(writer.prompt_ids(messages)[0])
    assert "<|user|>" not in text and "Decompose each action" in text
    torch.manual_seed(0)
    assert_schema_valid(writer.write("basketball", ACTIONS[:1], SHORT_FIXED), ACTIONS[:1], SHORT_FIXED)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("local:/nonexistent/model", "there is no directory /nonexistent/model"),
        ("local:nobody/no-such-model", "not in the Hugging Face cache.*HF_HUB_OFFLINE is set"),
    ],
)
def test_model_not_found(spec, match):
    writer = make_writer(spec)
    with pytest.raises(ActAlignError, match=match):
        writer.write("basketball", ACTIONS)


def test_make_writer_resolves_specs(lm_dir, monkeypatch):
    assert make_writer(None) is None
    monkeypatch.setenv("ACTALIGN_LLM", f"local:{lm_dir}")
    monkeypatch.setenv("ACTALIGN_LLM_MAX_NEW_TOKENS", "77")
    writer = make_writer(None)
    assert isinstance(writer, LocalWriter) and writer.max_new_tokens == 77
    assert writer.model == str(lm_dir.resolve())
    server = make_writer("http://127.0.0.1:9/v1")
    assert server.source == "http://127.0.0.1:9/v1|json_schema"
    with pytest.raises(ActAlignError, match="Unknown LLM 'gpt-4o'"):
        make_writer("gpt-4o")
    with pytest.raises(ActAlignError, match="drop `llm_model`"):
        make_writer(f"local:{lm_dir}", model="m")
    monkeypatch.setenv("ACTALIGN_LLM_TIMEOUT", "soon")
    with pytest.raises(ActAlignError, match="ACTALIGN_LLM_TIMEOUT must be a number"):
        make_writer(None)


# --------------------------------------------------------------------------- the CLI


def test_cli_generate_show_and_classify(lm_dir, siglip_dir, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    llm = ["--llm", f"local:{lm_dir}", "--store", store, "--strategy", "short-fixed"]
    torch.manual_seed(0)
    code, out, err = run_cli(
        ["scripts", "generate", "--domain", "basketball", "--candidates", *ACTIONS[:2], *llm], capsys
    )
    assert code == 0, err
    stored = {s.action: s for s in ScriptStore(store).all()}
    assert list(stored) == sorted(ACTIONS[:2], key=str.lower)
    for s in stored.values():
        assert s.source == f"local:{lm_dir.resolve()}|json_schema" and s.model == str(lm_dir.resolve())
        assert (s.strategy, s.temperature, s.prompt_version) == ("short-fixed", 1.0, "short-fixed/1")
        assert_schema_valid({s.action: list(s.steps)}, [s.action], SHORT_FIXED)
        assert all(step in out for step in s.steps)

    show = ["scripts", "show", "--store", store, "--domain", "basketball", "--strategy", "short-fixed"]
    code, out, _ = run_cli(show, capsys)
    assert code == 0
    for s in stored.values():
        assert f"[basketball] {s.action}  (short-fixed, {lm_dir.resolve()}, T=1.0)" in out
        assert all(f"{i}. {step}" in out for i, step in enumerate(s.steps, 1))

    clip = make_video(tmp_path / "clip.mp4", n=20, fps=10, size=(48, 40))
    model = ["--model", siglip_dir, "--fps", 5, "--format", "json"]
    torch.manual_seed(1)
    code, out, err = run_cli(
        ["classify", clip, "--domain", "basketball", "--candidates", *ACTIONS, *llm, *model],
        capsys,
    )
    assert code == 0, err
    (video,) = json.loads(out)["videos"]
    after = {s.action: s for s in ScriptStore(store).all()}
    assert set(after) == set(ACTIONS)  # the missing action was generated by classify, once
    assert all(after[a].steps == stored[a].steps for a in stored)  # stored ones were reused
    assert {p["action"] for p in video["predictions"]} == set(ACTIONS)
    for p in video["predictions"]:
        assert [seg["step"] for seg in p["segments"]] == list(after[p["action"]].steps)


def test_cli_prompt_too_long_is_one_sentence(tmp_path, capsys):
    short = build_causal_lm(tmp_path / "short-context", context=64)
    llm = ["--llm", f"local:{short}", "--store", tmp_path / "s.sqlite"]
    code, out, err = run_cli(
        ["scripts", "generate", "--domain", "basketball", "--candidates", *ACTIONS, *llm],
        capsys,
    )
    assert code == 2 and out == ""
    assert re.fullmatch(
        r"error: The prompt for 3 actions is \d+ tokens, longer than the context of .+ \(64 tokens\);"
        r" generate fewer actions at a time or use a model with a longer context\.\n",
        err,
    )
    assert ScriptStore(tmp_path / "s.sqlite").all() == []


def test_cli_token_bound_from_the_environment(lm_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACTALIGN_LLM", f"local:{lm_dir}")
    monkeypatch.setenv("ACTALIGN_LLM_MAX_NEW_TOKENS", "30")
    store = tmp_path / "s.sqlite"
    code, _, err = run_cli(
        ["scripts", "generate", "--domain", "basketball", "--candidates", *ACTIONS[:2], "--store", store],
        capsys,
    )
    assert code == 2 and "bound of 30 new tokens" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_the_app_started_with_llm_local_generates_missing_scripts(lm_dir, siglip_dir, tmp_path, monkeypatch):
    """`actalign app --llm local:DIR` (and $ACTALIGN_LLM) reach the app's engine: "Generate
    missing with the LLM" writes with the in-process model, which loads once."""
    from actalign.app import Engine
    from actalign.cli import build_parser
    from actalign.cli.app import settings

    args = build_parser().parse_args(
        ["app", "--model", str(siglip_dir), "--llm", f"local:{lm_dir}", "--store", str(tmp_path / "s.sqlite")]
    )
    engine = Engine(settings(args))
    got = engine.generate("soccer", ["Bicycle kick", "Penalty kick"])
    assert set(got) == {"Bicycle kick", "Penalty kick"} and all(got.values())
    with engine.source() as src:
        assert src.writer is not None and src.writer.source.startswith(f"local:{lm_dir.resolve()}")
        first = src.writer
    with engine.source() as src:
        assert src.writer is first  # one writer (one loaded model) for every request
    monkeypatch.setenv("ACTALIGN_LLM", f"local:{lm_dir}")
    from_env = Engine(settings(build_parser().parse_args(["app", "--model", str(siglip_dir)])))
    with from_env.source() as src:
        assert src.writer is not None and src.writer.source.startswith("local:")
