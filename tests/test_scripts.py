"""Scripts: strict parsing, the answer's schema, the LLM writer against a loopback chat-completions
server, the store."""

from __future__ import annotations

import json
import multiprocessing as mp
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actalign.errors import ActAlignError
from actalign.scripts import ScriptSource, ScriptStore
from actalign.scripts.llm import LLMWriter
from actalign.scripts.parse import InvalidAnswer, parse_scripts, validate_steps
from actalign.scripts.prompts import CONTEXT_RICH, SHORT_FIXED, STRATEGIES
from actalign.scripts.schema import scripts_schema, step_pattern
from actalign.scripts.store import HAND, Script, read_scripts_file, stats
from llm_server import FakeLLM, mode_of

ACTIONS = ["Tip-in", "Putback dunk"]
GOOD = {
    "Tip-in": [
        "Player jumps near the rim as the basketball bounces off the backboard",
        "Player taps the rebounding basketball with one hand toward the hoop",
        "The basketball drops through the net after the one-handed tip",
    ],
    "Putback dunk": [
        "A teammate's basketball shot misses and rebounds off the rim",
        "Player leaps high and catches the rebound with both hands above the rim",
        "Player slams the basketball through the hoop with both hands",
    ],
}


def answer(mapping: dict) -> str:
    return json.dumps({"actions": mapping})


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


def writer(llm: FakeLLM, **kw) -> LLMWriter:
    return LLMWriter(model="test-model", base_url=llm.url, api_key="k", **kw)


# --------------------------------------------------------------------------- parsing


def test_parse_good_and_wrapped_answers():
    plain = answer(GOOD)
    for text in (plain, f"Sure! Here you go:\n{plain}\nEnjoy.", f"```json\n{plain}\n```", json.dumps(GOOD)):
        assert parse_scripts(text, "basketball", ACTIONS, CONTEXT_RICH) == GOOD


def test_parse_matches_names_loosely_and_cleans_numbering():
    text = json.dumps(
        {
            "TIP-IN  in Basketball": ["1. Jumps near the rim", "2) Taps the ball in"],
            "putback   DUNK": ["a b", "c d"],
        }
    )
    got = parse_scripts(text, "basketball", ACTIONS, None)
    assert got == {"Tip-in": ["Jumps near the rim", "Taps the ball in"], "Putback dunk": ["a b", "c d"]}


@pytest.mark.parametrize(
    ("step", "cleaned"),
    [
        ("1. Jumps near the rim", "Jumps near the rim"),
        ("(3) Lands", "Lands"),
        ("4: Lands", "Lands"),
        ("5 - Lands", "Lands"),
        ("Step 6: Lands", "Lands"),
        ("step 7 Lands", "Lands"),
        # numbers that belong to the step stay
        ("360 spin on one skate", "360 spin on one skate"),
        ("2 defenders trap the ball handler", "2 defenders trap the ball handler"),
        ("3-point shot from the corner", "3-point shot from the corner"),
        ("1.5 seconds later the ball drops", "1.5 seconds later the ball drops"),
        ("Step back and shoot", "Step back and shoot"),
    ],
)
def test_only_list_numbering_is_cleaned_from_steps(step, cleaned):
    from actalign.scripts.parse import clean_step

    assert clean_step(step) == cleaned


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"Tip-in": GOOD["Tip-in"]}, "'Putback dunk' is missing"),
        ({**GOOD, "Tip-in": [GOOD["Tip-in"][0]] * 3}, "repeats the step"),
        ({**GOOD, "Tip-in": []}, "non-empty list"),
        ({**GOOD, "Tip-in": ["ok step here", "", "fine step"]}, "empty or trivial"),
        ({**GOOD, "Tip-in": ["one step only"]}, "has 1 steps"),
        ({**GOOD, "Tip-in": "not a list"}, "non-empty list"),
    ],
)
def test_parse_rejects_invalid_scripts(mapping, problem):
    with pytest.raises(InvalidAnswer, match=problem):
        parse_scripts(answer(mapping), "basketball", ACTIONS, CONTEXT_RICH)


def test_parse_rejects_non_json():
    with pytest.raises(InvalidAnswer, match="no JSON object"):
        parse_scripts("I cannot help with that.", "basketball", ACTIONS, None)
    with pytest.raises(InvalidAnswer, match="no JSON object"):
        parse_scripts('{"actions": {"Tip-in": ["a", ', "basketball", ACTIONS, None)


def test_short_fixed_needs_exactly_ten_short_steps():
    ten = [f"step {w} now" for w in "abcdefghij"]
    ok = {"Tip-in": ten, "Putback dunk": ten}
    assert parse_scripts(answer(ok), "basketball", ACTIONS, SHORT_FIXED) == ok
    with pytest.raises(InvalidAnswer, match="give exactly 10"):
        parse_scripts(answer({**ok, "Tip-in": ten[:9]}), "basketball", ACTIONS, SHORT_FIXED)
    with pytest.raises(InvalidAnswer, match="words"):
        long = ["a very long step with far too many words", *ten[1:]]
        parse_scripts(answer({**ok, "Tip-in": long}), "basketball", ACTIONS, SHORT_FIXED)


# --------------------------------------------------------------------------- the answer's schema

THREE = ["Tip-in", "Putback dunk", "Alley-oop Dunk"]


@pytest.mark.parametrize("strategy", list(STRATEGIES.values()), ids=list(STRATEGIES))
def test_schema_requires_exactly_the_actions(strategy):
    schema = scripts_schema(THREE, strategy)
    inner = schema["properties"]["actions"]
    assert schema["required"] == ["actions"] and schema["additionalProperties"] is False
    assert inner["required"] == THREE and inner["additionalProperties"] is False
    for script in inner["properties"].values():
        assert (script["minItems"], script["maxItems"]) == (strategy.min_steps, strategy.max_steps)


@pytest.mark.parametrize("strategy", [CONTEXT_RICH, SHORT_FIXED], ids=["context-rich", "short-fixed"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_step_the_schema_allows_passes_the_validator(strategy, data):
    """Random text within the pattern is never trivial, too long, or emptied by numbering cleanup."""
    s = data.draw(st.from_regex(step_pattern(strategy.max_words), fullmatch=True))
    cleaned, problems = validate_steps("a", [s], None)
    assert problems == [] and len(cleaned[0].split()) <= strategy.max_words


@pytest.mark.parametrize("text", ["a", "Step 1 x", "x y z!", "two  spaces", "ok ok ok ok ok ok ok"])
def test_the_step_pattern_rejects(text):
    assert not re.fullmatch(step_pattern(SHORT_FIXED.max_words).strip("^$"), text)


# --------------------------------------------------------------------------- LLM writer


def test_the_context_rich_prompt_at_the_papers_table_3_temperature(llm):
    from actalign.cli.common import STRATEGY_NAMES
    from actalign.scripts.prompts import STRATEGIES

    assert list(STRATEGIES) == STRATEGY_NAMES  # the CLI offers every strategy
    llm.answer(("answer", answer(GOOD)))
    assert writer(llm).write("basketball", ACTIONS, "context-rich-t1") == GOOD
    (request,) = llm.requests
    assert request["temperature"] == 1.0
    assert request["messages"][0]["content"] == CONTEXT_RICH.render("basketball", ACTIONS)


def test_writer_one_request_for_all_actions(llm):
    llm.answer(("answer", answer(GOOD)))
    assert writer(llm).write("basketball", ACTIONS) == GOOD
    (request,) = llm.requests
    assert request["temperature"] == 0.2 and request["model"] == "test-model"
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "actalign_scripts",
            "schema": scripts_schema(ACTIONS, CONTEXT_RICH),
            "strict": True,
        },
    }
    prompt = request["messages"][0]["content"]
    assert "Tip-in" in prompt and "Putback dunk" in prompt and "basketball" in prompt


def test_writer_short_fixed_temperature(llm):
    ten = [f"step {w} now" for w in "abcdefghij"]
    llm.answer(("answer", answer({"Tip-in": ten, "Putback dunk": ten})))
    writer(llm).write("basketball", ACTIONS, "short-fixed")
    assert llm.requests[0]["temperature"] == 1.0


@pytest.mark.parametrize(
    "bad",
    ["{not json", answer({"Tip-in": GOOD["Tip-in"]}), answer({**GOOD, "Tip-in": [GOOD["Tip-in"][0]] * 3})],
    ids=["malformed", "missing-action", "duplicate-steps"],
)
def test_writer_repairs_once(llm, bad):
    llm.answer(("answer", bad), ("answer", f"```json\n{answer(GOOD)}\n```"))
    assert writer(llm).write("basketball", ACTIONS) == GOOD
    assert len(llm.requests) == 2
    repair = llm.requests[1]["messages"]
    assert repair[1]["content"] == bad and "invalid" in repair[2]["content"]


def test_writer_gives_up_after_the_repair(llm):
    llm.answer(("answer", answer({"Tip-in": GOOD["Tip-in"]})))
    with pytest.raises(ActAlignError, match="'Putback dunk' is missing"):
        writer(llm).write("basketball", ACTIONS)
    assert len(llm.requests) == 2


def test_writer_retries_429_then_succeeds(llm):
    llm.answer(("status", 429, "rate limited"), ("answer", answer(GOOD)))
    assert writer(llm).write("basketball", ACTIONS) == GOOD
    assert len(llm.requests) == 2


def test_writer_500_forever(llm):
    llm.answer(("status", 500))
    with pytest.raises(ActAlignError, match=r"kept failing \(HTTP 500\)"):
        writer(llm, max_retries=2).write("basketball", ACTIONS)
    assert len(llm.requests) == 3


def test_writer_timeout(llm):
    llm.answer(("slow", 3.0, answer(GOOD)))
    with pytest.raises(ActAlignError, match="did not answer in time"):
        writer(llm, timeout=0.3, max_retries=1).write("basketball", ACTIONS)


@pytest.mark.parametrize(
    ("supported", "modes"),
    [
        (("json_object_schema", "json_object"), ["json_schema", "json_object_schema"]),
        (("json_object",), ["json_schema", "json_object_schema", "json_object"]),
        ((), ["json_schema", "json_object_schema", "json_object", "prompt"]),
    ],
    ids=["llama-cpp-python", "json-mode-only", "no-structured-output"],
)
def test_writer_steps_down_the_structured_output_modes(tmp_path, supported, modes):
    with FakeLLM(response_formats=supported) as server:
        server.answer(("answer", "Here: " + answer(GOOD)))
        w = writer(server)
        store = ScriptStore(tmp_path / "s.sqlite")
        assert ScriptSource([], store, w).get("basketball", ACTIONS) == GOOD
        assert [mode_of(r) for r in server.requests] == modes
        assert w.source == f"{server.url}|{modes[-1]}"
        assert store.get("basketball", "Tip-in").source == f"{server.url}|{modes[-1]}"
        if modes[-1] == "json_object_schema":
            assert server.requests[-1]["response_format"]["schema"] == scripts_schema(ACTIONS, CONTEXT_RICH)
        w.write("basketball", ACTIONS)  # the mode found is kept: one request, no new rejection
        assert [mode_of(r) for r in server.requests[len(modes) :]] == [modes[-1]]


def test_writer_does_not_step_down_on_other_bad_requests(llm):
    llm.answer(("status", 400, "messages: too many tokens"))
    with pytest.raises(ActAlignError, match=r"HTTP 400"):
        writer(llm).write("basketball", ACTIONS)
    assert [r["response_format"]["type"] for r in llm.requests] == ["json_schema"]


def test_writer_unreachable_and_unconfigured(monkeypatch):
    with pytest.raises(ActAlignError, match="Cannot reach the LLM"):
        LLMWriter(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=2).write(
            "basketball", ACTIONS
        )
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ACTALIGN_LLM_API_KEY", "ACTALIGN_LLM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ActAlignError, match="No LLM is configured"):
        LLMWriter()


# --------------------------------------------------------------------------- store


def test_store_round_trip_and_keys(tmp_path):
    store = ScriptStore(tmp_path / "s.sqlite")
    a = Script(
        "basketball", "Tip-in", ("x y", "z w"), "generated", "context-rich", "m1", 0.2, "context-rich/1"
    )
    b = Script(
        "basketball", "Tip-in", ("p q", "r s"), "generated", "context-rich", "m2", 0.2, "context-rich/1"
    )
    store.put_many([a, b])
    assert store.get("BASKETBALL", " tip-in ", model="m1").steps == ("x y", "z w")
    assert store.get("basketball", "tip-in", model="m2").steps == ("p q", "r s")
    assert store.get("basketball", "tip-in", model="m3") is None
    assert store.get("basketball", "tip-in", strategy="short-fixed") is None
    got = store.get("basketball", "tip-in", model="m1")
    assert (got.temperature, got.prompt_version, got.kind) == (0.2, "context-rich/1", "generated")
    reopened = ScriptStore(tmp_path / "s.sqlite")
    assert len(reopened.all()) == 2


def test_hand_written_always_win(tmp_path):
    store = ScriptStore(tmp_path / "s.sqlite")
    store.put(Script("basketball", "Tip-in", ("gen a", "gen b"), "generated", "context-rich", "m", 0.2, "v"))
    store.put(Script("basketball", "tip-in", ("hand a", "hand b"), HAND))
    assert store.get("basketball", "Tip-in", strategy="context-rich", model="m").steps == ("hand a", "hand b")
    assert store.effective() == {"basketball": {"tip-in": ["hand a", "hand b"]}}


def test_export_import_round_trip(tmp_path):
    store = ScriptStore(tmp_path / "a.sqlite")
    store.put(Script("basketball", "Tip-in", ("gen a", "gen b"), "generated", "context-rich", "m", 0.2, "v"))
    assert store.export(tmp_path / "out.json") == 1
    other = ScriptStore(tmp_path / "b.sqlite")
    assert other.import_file(tmp_path / "out.json") == 1
    assert other.effective() == store.effective()
    assert other.get("basketball", "tip-in").kind == HAND


def test_import_authors_format(tmp_path):
    authors = [
        {
            "id": "x1",
            "domain": "basketball",
            "cleaned_options": ["tip-in", "putback dunk"],
            "subactions": {
                "tip-in in basketball": ["jump", "tap the ball"],
                "putback dunk in basketball": ["catch rebound", "slam"],
            },
        },
        {"id": "x2", "domain": "tennis", "subactions": "unparsed LLM text"},
    ]
    path = tmp_path / "generated_subactions.json"
    path.write_text(json.dumps(authors))
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 samples whose scripts could not be parsed\.$"):
        assert read_scripts_file(path) == {
            "basketball": {"tip-in": ["jump", "tap the ball"], "putback dunk": ["catch rebound", "slam"]}
        }
    store = ScriptStore(tmp_path / "s.sqlite")
    with pytest.warns(UserWarning, match="skipped 1 of 2 samples"):
        assert store.import_file(path) == 2
    assert store.get("Basketball", "Putback Dunk").steps == ("catch rebound", "slam")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{broken", "not valid JSON"),
        ('["x"]', "lacks 'domain'"),
        ('{"basketball": ["a"]}', "map each domain"),
        ('{"basketball": {"tip-in": []}}', "non-empty list"),
    ],
)
def test_bad_scripts_files(tmp_path, content, match):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ActAlignError, match=match):
        read_scripts_file(path)
    with pytest.raises(ActAlignError, match="No such scripts file"):
        read_scripts_file(tmp_path / "absent.json")


def _write_many(args):
    path, worker = args
    store = ScriptStore(path)
    for i in range(40):
        store.put(Script("d", f"a{worker}-{i}", ("s1 x", "s2 y"), "generated", "context-rich", "m", 0.2, "v"))
    return worker


def test_concurrent_writers(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_write_many, [(tmp_path / "s.sqlite", 0), (tmp_path / "s.sqlite", 1)])
    assert len(ScriptStore(tmp_path / "s.sqlite").all()) == 80


def test_stats_match_hand_computation():
    rows = stats(
        {"a": {"x": ["one two", "three"], "y": ["four five six"]}, "b": {"z": ["w w", "w", "w w w"]}}
    )
    by = {r["domain"]: r for r in rows}
    assert by["a"]["actions"] == 2 and by["a"]["steps_mean"] == pytest.approx(1.5)
    assert by["a"]["words_mean"] == pytest.approx(2.0) and by["a"]["steps_std"] == pytest.approx(0.5)
    assert by["all"]["actions"] == 3 and by["all"]["steps_mean"] == pytest.approx(2.0)
    assert by["all"]["words_mean"] == pytest.approx(12 / 6)


# --------------------------------------------------------------------------- source


def test_source_order_files_store_llm(tmp_path, llm):
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"basketball": {"tip-in": ["from the file", "second step"]}}))
    store = ScriptStore(tmp_path / "s.sqlite")
    llm.answer(("answer", answer({"Putback dunk": GOOD["Putback dunk"]})))
    source = ScriptSource([hand], store, writer(llm))
    got = source.get("basketball", ACTIONS)
    assert got == {"Tip-in": ["from the file", "second step"], "Putback dunk": GOOD["Putback dunk"]}
    assert "Tip-in" not in llm.requests[0]["messages"][0]["content"]  # only what was missing
    again = ScriptSource([hand], store, writer(llm)).get("basketball", ACTIONS)
    assert again == got and len(llm.requests) == 1  # generated once, then stored
    stored = store.get("basketball", "putback dunk")
    assert (stored.model, stored.temperature, stored.prompt_version) == ("test-model", 0.2, "context-rich/1")
    assert stored.source == f"{llm.url}|json_schema"


def test_source_without_llm_names_what_is_missing(tmp_path):
    source = ScriptSource([], ScriptStore(tmp_path / "s.sqlite"), None)
    with pytest.raises(
        ActAlignError, match=r"No scripts for 'Tip-in', 'Putback dunk' in 'basketball'.*`scripts=FILE`"
    ):
        source.get("basketball", ACTIONS)
    with pytest.raises(ActAlignError, match="Unknown script strategy"):
        ScriptSource(strategy="poetic")


def test_example_scripts_cover_the_shared_samples():
    """The README's main command uses examples/sample-scripts.json: it must parse and, when the
    shared clips are present, cover every candidate of their manifest."""
    from pathlib import Path

    from actalign.scripts.store import lookup
    from media import SAMPLES

    scripts = read_scripts_file(Path(__file__).parents[1] / "examples" / "sample-scripts.json")
    assert all(len(steps) >= 3 for acts in scripts.values() for steps in acts.values())
    manifest = SAMPLES / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/data is not beside this checkout")
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        for c in row["candidates"]:
            assert lookup(scripts, row["domain"], c), (row["domain"], c)


def test_unparsed_and_invalid_samples_of_the_authors_file_are_counted_in_one_warning(tmp_path, capsys):
    from actalign.cli import main

    authors = [
        {"domain": "basketball", "subactions": {"tip-in in basketball": ["jump", "tap the ball"]}},
        {"domain": "basketball", "subactions": {"dunk in basketball": [], "": ["x y"]}},
        {"domain": "tennis", "subactions": "1. Toss the ball ... (unparsed LLM text)"},
        {"domain": "tennis", "subactions": None},
    ]
    path = tmp_path / "generated_subactions.json"
    path.write_text(json.dumps(authors))
    store = tmp_path / "s.sqlite"
    assert main(["scripts", "import", str(path), "--store", str(store)]) == 0
    err = capsys.readouterr().err.splitlines()
    said = "skipped 2 of 4 samples whose scripts could not be parsed and 2 invalid scripts."
    assert err == [f"warning: {path}: {said}"]
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(authors[:1]))
    assert main(["scripts", "import", str(clean), "--store", str(store)]) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- scripts by strategy

TEN = tuple(f"step {w} now" for w in "abcdefghij")


def _two_strategies(path) -> ScriptStore:
    """Context-rich scripts for two actions, then short-fixed ones for one of them (newer)."""
    store = ScriptStore(path)
    store.put_many(
        [
            Script("basketball", a, tuple(GOOD[a]), "generated", "context-rich", "m", 0.2, "context-rich/1")
            for a in ACTIONS
        ]
    )
    store.put(Script("basketball", "Tip-in", TEN, "generated", "short-fixed", "m", 1.0, "short-fixed/1"))
    return store


def test_export_stats_and_show_keep_strategies_apart(tmp_path, capsys):
    from actalign.cli import main

    store = tmp_path / "s.sqlite"
    _two_strategies(store).close()
    out = tmp_path / "out.json"
    assert main(["scripts", "export", str(out), "--store", str(store)]) == 0
    assert json.loads(out.read_text()) == {"basketball": GOOD}  # the default strategy only
    assert "exported 2 context-rich scripts" in capsys.readouterr().out
    assert main(["scripts", "export", str(out), "--store", str(store), "--strategy", "short-fixed"]) == 0
    assert json.loads(out.read_text()) == {"basketball": {"Tip-in": list(TEN)}}
    capsys.readouterr()

    assert main(["scripts", "stats", "--store", str(store)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("basketball", "2", "3.00"), ("all", "2", "3.00")]
    assert main(["scripts", "stats", "--store", str(store), "--strategy", "short-fixed"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("basketball", "1", "10.00"), ("all", "1", "10.00")]

    assert main(["scripts", "show", "--store", str(store)]) == 0
    shown = capsys.readouterr().out
    assert GOOD["Putback dunk"][0] in shown and "step a now" not in shown and "short-fixed" not in shown
    assert main(["scripts", "show", "--store", str(store), "--strategy", "short-fixed"]) == 0
    shown = capsys.readouterr().out
    assert "step j now" in shown and GOOD["Tip-in"][0] not in shown and "Putback dunk" not in shown
    assert main(["scripts", "show", "--store", str(store), "--strategy", "context-rich-t1"]) == 0
    assert "--strategy context-rich, --strategy short-fixed" in capsys.readouterr().err


def test_the_export_edit_import_loop_keeps_strategies_apart(tmp_path, capsys):
    from actalign.cli import main

    store = tmp_path / "s.sqlite"
    _two_strategies(store).close()
    out = tmp_path / "short.json"
    assert main(["scripts", "export", str(out), "--store", str(store), "--strategy", "short-fixed"]) == 0
    edited = {"basketball": {"Tip-in": ["edited " + s for s in TEN]}}
    out.write_text(json.dumps(edited))
    assert main(["scripts", "import", str(out), "--store", str(store), "--strategy", "short-fixed"]) == 0
    assert "as hand-written short-fixed scripts" in capsys.readouterr().out
    s = ScriptStore(store)
    mine_short = tuple(edited["basketball"]["Tip-in"])
    assert s.get("basketball", "Tip-in", strategy="short-fixed").steps == mine_short
    assert s.get("basketball", "Tip-in", strategy="context-rich").steps == tuple(GOOD["Tip-in"])
    assert s.get("basketball", "Tip-in", strategy="short-fixed").strategy == "short-fixed"
    assert ScriptSource([], s, None, "context-rich").get("basketball", ACTIONS) == GOOD
    got = ScriptSource([], s, None, "short-fixed").get("basketball", ["Tip-in"])
    assert got == edited["basketball"]
    assert s.effective("context-rich") == {"basketball": GOOD}

    # a hand-written import for the default strategy wins there, and only there
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"basketball": {"tip-in": ["my first step", "my second step"]}}))
    assert main(["scripts", "import", str(mine), "--store", str(store)]) == 0
    assert s.get("basketball", "Tip-in", strategy="context-rich").steps == ("my first step", "my second step")
    assert s.get("basketball", "Tip-in", strategy="short-fixed").steps == mine_short
    assert s.get("basketball", "Tip-in", strategy="context-rich-t1") is None


def test_hand_written_scripts_from_before_strategies_serve_every_strategy(tmp_path):
    store = _two_strategies(tmp_path / "s.sqlite")
    store.put(Script("basketball", "Tip-in", ("old hand a", "old hand b"), HAND))  # no strategy
    store.put(Script("basketball", "Tip-in", ("new hand a", "new hand b"), HAND, "short-fixed"))
    assert store.get("basketball", "Tip-in", strategy="context-rich").steps == ("old hand a", "old hand b")
    assert store.get("basketball", "Tip-in", strategy="short-fixed").steps == ("new hand a", "new hand b")
    assert store.effective("short-fixed") == {"basketball": {"Tip-in": ["new hand a", "new hand b"]}}
    with pytest.raises(ActAlignError, match="Unknown script strategy"):
        store.effective("poetic")


# --------------------------------------------------------------------------- the scripts command


def _scripts_parsers():
    import argparse

    from actalign.cli import build_parser

    def sub(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    return sub(sub(build_parser())["scripts"])


# generate's LLM options come from cli.common (shared with classify, batch and eval)
SHARED = {"--scripts", "--store", "--strategy", "--llm", "--llm-model", "--llm-base-url"}


def test_every_scripts_option_states_its_default_in_one_style():
    from actalign.cli import HelpFormatter

    formatter = HelpFormatter("actalign")
    for name, parser in _scripts_parsers().items():
        assert parser.description, name
        for action in parser._actions:
            flags = action.option_strings
            if "-h" in flags or (name == "generate" and SHARED & set(flags)):
                continue
            text = formatter._get_help_string(action) if flags else action.help
            assert text, (name, action.dest)
            if flags:
                assert "(default: " in text and "(default " not in text, (name, flags, text)
        for action in parser._actions:
            if action.option_strings == ["--strategy"]:
                assert action.default == "context-rich", name


def test_generate_without_an_llm_says_what_applies_and_leaves_no_store(tmp_path, capsys):
    from actalign.cli import main

    code = main(["scripts", "generate", "--domain", "basketball", "--candidates", "Tip-in"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--llm local:" in err and "OPENAI_API_KEY" in err and "actalign scripts import" in err
    assert "--scripts FILE" not in err  # it does not apply to generate
    assert not (tmp_path / "home").exists()
