"""The specializer's public API on a user's module: demos/tlv_options.py, a toy protocol's
option interpreter declared in its own .spec.toml, guarded by its own session's events and
by watches on its data; and `pystack spec show --module` on it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specializer
from demos import tlv_options as tlv
from demos.tlv_options import OptionError, Session, decode_options, encode_message
from specializer import (
    DeclarationError,
    GuardRejected,
    StaleSpecialization,
    UserSystem,
    announce,
    specialize,
)
from specializer.residual import reachable_functions

MODULE = "demos.tlv_options"
ROOT = Path(__file__).resolve().parent.parent


def outcome(function, *args):
    try:
        return ("returned", function(*args))
    except OptionError as exc:
        return ("raised", str(exc))


sessions = st.builds(
    Session,
    maxmsg=st.sampled_from([0, 1, 64, 1400, 0xFFFF]),
    wscale=st.integers(-1, 14),
    timestamps=st.booleans(),
    cookie=st.binary(max_size=6),
)
option_values = {
    "maxmsg": st.integers(0, 0xFFFF),
    "wscale": st.integers(-1, 14),
    "timestamps": st.booleans(),
    "cookie": st.binary(max_size=6),
}
changes = st.one_of(*(st.tuples(st.sampled_from(["announced", "unannounced"]), st.just(name), values)
                      for name, values in option_values.items()))
encodes = st.tuples(st.just("encode"), st.integers(0, 1 << 40), st.binary(max_size=80))
well_formed = st.lists(st.sampled_from([
    bytes((tlv.OPT_NOP,)),
    bytes((tlv.OPT_MAXMSG, 4, 5, 120)),
    bytes((tlv.OPT_WSCALE, 3, 7)),
    bytes((tlv.OPT_TIMESTAMP, 10)) + bytes(range(8)),
    bytes((tlv.OPT_COOKIE, 5)) + b"abc",
    bytes((tlv.OPT_END,)),
]), max_size=6).map(b"".join)
decodes = st.tuples(st.just("decode"), st.one_of(well_formed, st.binary(max_size=16)))
echoes = st.tuples(st.just("echo"), st.integers(0, 0xFFFFFFFF))
steps = st.lists(st.one_of(encodes, decodes, changes, echoes, st.just(("close",))), max_size=25)


@settings(max_examples=60, deadline=None)
@given(session=sessions, steps=steps,
       policy=st.sampled_from(["reject", "fallback", "respecialize"]), debug=st.booleans())
def test_specialized_and_generic_agree_under_option_changes(session, steps, policy, debug):
    """Both scenarios, for every change the session can see: announced (every policy),
    written behind the guards' back, the dynamic echo, closing. Debug mode would raise
    StaleSpecialization if a change reached the code with no guard acting."""
    guards = {"set_option": policy, "close": policy}
    system = UserSystem()
    encoder = specialize(MODULE, "tlv_encode", {"session": session}, policy=guards, debug=debug, system=system)
    decoder = specialize(MODULE, "tlv_decode", {"session": session}, policy=guards, debug=debug, system=system)
    assert encoder.mode == "specialized" and "session.maxmsg" not in encoder.source
    for step in steps:
        kind = step[0]
        if kind == "encode":
            assert outcome(encoder, *step[1:]) == outcome(encode_message, session, *step[1:])
        elif kind == "decode":
            assert outcome(decoder, step[1], {}) == outcome(decode_options, session, step[1], {})
        elif kind == "echo":
            session.echo = step[1]
        elif kind == "close":
            if policy == "reject":
                with pytest.raises(GuardRejected):
                    session.close()
                assert not session.closed
            else:
                session.close()
        elif step[0] == "announced":
            before = getattr(session, step[1])
            try:
                session.set_option(step[1], step[2])
            except GuardRejected:
                assert policy == "reject" and getattr(session, step[1]) == before
        else:
            setattr(session, step[1], step[2])  # nobody announces it: the watch on the data sees it
    encoder.close()
    decoder.close()


def test_an_announced_change_respecializes_for_the_new_value():
    session = Session(1400, 7, True, b"abc")
    spec = specialize(MODULE, "tlv_encode", {"session": session})
    assert "1400" in spec.source
    session.set_option("maxmsg", 512)
    assert spec.mode == "stale" and spec.events == ["stale after set_option"]
    assert spec(1, b"x") == encode_message(session, 1, b"x")
    assert spec.mode == "specialized" and "512" in spec.source and "1400" not in spec.source
    spec.close()


def test_a_rejected_change_is_refused_before_it_is_made():
    session = Session(1400, -1, True, b"abc")
    spec = specialize(MODULE, "tlv_decode", {"session": session})  # declared: set_option = "reject"
    with pytest.raises(GuardRejected, match="close it first"):
        session.set_option("cookie", b"")
    assert session.cookie == b"abc" and spec.mode == "specialized"
    assert spec.events == ["rejected set_option"]
    spec.close()
    session.set_option("cookie", b"")  # released: the change goes through
    assert session.cookie == b""


def test_close_falls_back_to_the_generic_code():
    session = Session(1400, 7, False)
    spec = specialize(MODULE, "tlv_encode", {"session": session})
    session.close()
    assert spec.mode == "generic" and spec.source is None
    assert outcome(spec, 1, b"x") == ("raised", "session closed") == outcome(encode_message, session, 1, b"x")
    spec.close()


def test_a_write_nobody_announces_is_caught_by_the_watch_on_the_data():
    session = Session(1400, 7, False)
    spec = specialize(MODULE, "tlv_encode", {"session": session}, debug=True)
    session.wscale = -1  # behind the guards' back
    assert spec(1, b"x") == encode_message(session, 1, b"x")
    assert spec.events == ["stale after a write to Session.wscale", "respecialized"]
    spec.close()
    assert type(session) is Session  # nobody watches it any more: its own class back


def test_debug_mode_catches_a_missing_guard():
    """An assumption broken where no watch and no event can see it (the instance dictionary
    itself) is what debug mode exists for: it must not pass unnoticed."""
    session = Session(1400, 7, False)
    spec = specialize(MODULE, "tlv_encode", {"session": session}, debug=True)
    session.__dict__["maxmsg"] = 9
    with pytest.raises(StaleSpecialization, match="maxmsg"):
        spec(1, b"x")
    spec.close()


def test_events_reach_only_the_code_that_rests_on_the_object():
    mine, other = Session(1400, 7, False), Session(1400, 7, False)
    spec = specialize(MODULE, "tlv_encode", {"session": mine})
    other.set_option("maxmsg", 1)
    announce(mine, "an event nobody declared")
    assert spec.mode == "specialized" and spec.events == []
    announce(spec.system, "close")  # a system as subject: every one of its specializations
    assert spec.mode == "generic"
    spec.close()


def test_a_context_builds_the_statics_through_the_declared_world():
    spec = specialize(MODULE, "tlv_encode", context={"maxmsg": 100, "wscale": -1, "timestamps": 0})
    session = spec.statics["session"]
    assert (session.maxmsg, session.wscale, session.timestamps) == (100, -1, False)
    assert spec(3, b"hi") == encode_message(session, 3, b"hi") == b"\x04\x00\x02" + b"\x02\x04\x00\x64" + b"hi"
    assert spec.assumptions == ["session.closed == False", "session.maxmsg == 100", "session.wscale == -1",
                                "session.timestamps == False", "session.cookie == b''"]
    spec.close()


def test_respecialize_takes_new_statics():
    spec = specialize(MODULE, "tlv_encode", context={})
    fresh = Session(0, -1, False)
    spec.respecialize(session=fresh)
    assert spec(1, b"abc") == encode_message(fresh, 1, b"abc") == b"\x00\x00\x03abc"
    spec.close()
    with pytest.raises(ValueError, match="is closed"):
        spec(1, b"abc")
    assert repr(spec).endswith("closed>")


@pytest.mark.parametrize("call, complaint", [
    (lambda: specialize(MODULE, "nosuch", {}), "declares no scenario 'nosuch'"),
    (lambda: specialize("no_such_module_anywhere", "x", {}), "cannot import"),
    (lambda: specialize("demos.kernel_demo", "x", {}), "no declarations"),
    (lambda: specialize(MODULE, "tlv_encode", {"now": 1}), "'now' is not a static parameter"),
    (lambda: specialize(MODULE, "tlv_encode", {}), "no value for the static parameter 'session'"),
    (lambda: specialize(MODULE, "tlv_encode", context={"colour": 1}), "unknown context key 'colour'"),
    (lambda: specialize(MODULE, "tlv_encode", context={"maxmsg": -1}), "wants 0 to 65535"),
    (lambda: specialize(MODULE, "tlv_encode", {"session": Session()}, context={}), "not both"),
    (lambda: specialize(MODULE, "tlv_encode", {"session": Session()}, policy={"set_option": "rejct"}),
     "unknown guard policy"),
    (lambda: specialize(MODULE, "tlv_encode", {"session": Session()}, policy={"setsockopt": "reject"}),
     "unknown guard event 'setsockopt'; events are set_option, close"),
    (lambda: specialize(MODULE, "tlv_encode", {"session": Session()}, policy={"close": "reinforce"}),
     "policies for a module's own events"),
])
def test_bad_requests_are_refused_with_a_clear_error(call, complaint):
    with pytest.raises((DeclarationError, ValueError), match=complaint):
        call()


def write_module(tmp_path: Path, name: str, toml: str) -> str:
    (tmp_path / f"{name}.py").write_text("def entry(a, b):\n    return a + b\n\n\ndef world(a=1):\n    return {'a': a}\n")
    (tmp_path / f"{name}.spec.toml").write_text(textwrap.dedent(toml))
    return name


BAD_DECLARATIONS = [
    ("user_bad_event", """
        events = ["poke"]
        [scenario.s]
        entry = "user_bad_event:entry"
        params = { a = "S", b = "D" }
        guards = { setsockopt = "reject" }
     """, "unknown guard event 'setsockopt'; events are poke"),
    ("user_reinforce", """
        events = ["poke"]
        [scenario.s]
        entry = "user_reinforce:entry"
        params = { a = "S", b = "D" }
        guards = { poke = "reinforce" }
     """, "policies for a module's own events are reject, fallback, respecialize"),
    ("user_bad_entry", """
        [scenario.s]
        entry = "user_bad_entry:nothing"
        params = { a = "S", b = "D" }
     """, "cannot find 'user_bad_entry:nothing'"),
    ("user_no_world", """
        [scenario.s]
        entry = "user_no_world:entry"
        params = { a = "S", b = "D" }
     """, "names no world"),
]


@pytest.mark.parametrize("name, toml, complaint", BAD_DECLARATIONS, ids=[b[0] for b in BAD_DECLARATIONS])
def test_bad_declarations_of_a_user_module_say_where(tmp_path, monkeypatch, name, toml, complaint):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, name, toml)
    with pytest.raises(DeclarationError, match=complaint):
        specialize(name, "s", context={})
    done = spec_cli("show", "--module", name, "s", pythonpath=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1 and complaint.split("'")[0] in done.stderr, done.stderr


def test_a_declared_user_module_needs_no_pystack_object(tmp_path, monkeypatch):
    """The smallest user: a module of two functions and a three-line declaration."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, "user_minimal", """
        [scenario.add]
        entry = "user_minimal:entry"
        params = { a = "S", b = "D" }
        world = "user_minimal:world"
     """)
    spec = specialize(name, "add", context={"a": 40})
    assert spec(2) == 42 and "40" in spec.source
    spec.close()


def spec_cli(*argv: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "pystack.cli", "spec", *argv], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def test_spec_show_on_the_user_module():
    done = spec_cli("show", "--module", MODULE, "tlv_encode", "--context", "maxmsg=512", "--context", "cookie=ab",
                    "--color", "never")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "scenario tlv_encode: encode_message() for one session" in out
    assert "declared in tlv_options.spec.toml; entry demos.tlv_options:encode_message" in out
    residual = out.split("-- residual code", 1)[1].split("\n-- ", 1)[0]
    assert "def specialized_tlv_encode(now, payload):" in residual
    assert "> 512" in residual and "b'\"\\x04ab'" in residual and "session.maxmsg" not in residual
    assert "its field maxmsg is 512" in out and "its field cookie is b'ab'" in out
    assert "guarded by the event set_option: policy respecialize" in out
    assert "connect" not in out.split("-- assumptions", 1)[1]  # the module's own events, not a socket's
    policies = out.split("-- guard events of this scenario and their policies\n", 1)[1].split("\n-- ", 1)[0]
    assert policies.split()[:2] == ["set_option", "respecialize"] and "close       fallback" in policies
    # The figures count the demo's own package: encode_message, encode_options and pad.
    functions_row = next(line for line in out.splitlines() if line.strip().startswith("functions"))
    assert functions_row.split()[1:4] == ["3", "3", "1"]
    listed = spec_cli("list", "--module", MODULE)
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == [
        "tlv_decode", "tlv_encode"]


@pytest.mark.parametrize("argv, complaint", [
    (["show", "--module", MODULE, "nosuch"], "declares no scenario 'nosuch'"),
    (["show", "--module", "no_such_module_anywhere", "x"], "cannot import"),
    (["show", "--module", "demos.kernel_demo", "x"], "no declarations"),
    (["show", "--module", MODULE, "tlv_encode", "--context", "bogus=1"], "unknown context key 'bogus'"),
    (["show", "--module", MODULE, "tlv_encode", "--context", "maxmsg=70000"], "wants 0 to 65535"),
    (["show", "--module", MODULE, "tlv_encode", "--context", "wscale=x"], "wants an integer"),
    (["show", "--module", MODULE, "tlv_encode", "--context", "maxmsg"], "key=value"),
    (["list", "--module", "no_such_module_anywhere"], "cannot import"),
])
def test_spec_show_module_bad_input_gets_one_line(argv, complaint):
    done = spec_cli(*argv)
    assert (done.returncode, done.stdout) == (2, "")
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pystack: ") and complaint in lines[0], done.stderr


def test_the_baseline_of_a_user_scenario_is_its_own_package():
    found = reachable_functions(encode_message, package="demos")
    assert sorted(f.__name__ for f in found) == ["encode_message", "encode_options", "pad"]
    assert reachable_functions(encode_message) == []  # pystack's package holds none of it


def test_the_public_api_is_exported_and_documented():
    for name in specializer.__all__:
        obj = getattr(specializer, name)
        assert inspect.getdoc(obj), f"specializer.{name} has no docstring"
    token_api = {"do_specialize_send", "specialized_send", "do_default_send", "re_specialize_send",
                 "done_specialize_send", "do_specialize_sendto", "specialized_sendto", "do_default_sendto",
                 "re_specialize_sendto", "done_specialize_sendto", "make_local_system", "token_info"}
    assert token_api | {"specialize", "announce", "Specialization", "UserSystem", "GuardRejected"} <= set(
        specializer.__all__)


def test_a_new_dict_filled_in_a_residual_loop_is_made_on_every_call(tmp_path, monkeypatch):
    """Found writing demos/tlv_options.decode_options (which now fills the caller's dict,
    as tcp_parse_options fills opt_rx): the rule is an exact residual or a refusal."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_dict.py").write_text(textwrap.dedent("""
        def entry(scale, data):
            found = {}
            for byte in data:
                found[byte] = byte * scale
            return found


        def world(scale=2):
            return {"scale": scale}
    """))
    (tmp_path / "user_dict.spec.toml").write_text(textwrap.dedent("""
        [scenario.s]
        entry = "user_dict:entry"
        params = { scale = "S", data = "D" }
        world = "user_dict:world"
    """))
    try:
        spec = specialize("user_dict", "s", context={})
    except specializer.SpecializationError:
        return  # refused with a diagnostic: sound
    assert spec(b"\x01") == {1: 2}
    assert spec(b"\x02") == {2: 4}  # not {1: 2, 2: 4}: one dict per call, as the generic code makes
    assert spec(b"") is not spec(b"")  # and a caller never shares one with another


def test_a_new_list_from_a_comprehension_is_made_on_every_call(tmp_path, monkeypatch):
    """A comprehension over static values may be folded while the list is only read, but a
    list the residual code changes or returns is a new one per call."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_lc.py").write_text(textwrap.dedent("""
        def grows(scale, data):
            acc = [x * scale for x in (1, 2)]
            for byte in data:
                acc.append(byte)
            return acc


        def returned(scale, data):
            return [x * scale for x in (1, 2)]


        def read(scale, data):
            total = 0
            for x in [x * scale for x in (1, 2)]:
                total += x
            return total + len(data)


        def world(scale=2):
            return {"scale": scale}
    """))
    (tmp_path / "user_lc.spec.toml").write_text("".join(textwrap.dedent(f"""
        [scenario.{name}]
        entry = "user_lc:{name}"
        params = {{ scale = "S", data = "D" }}
        world = "user_lc:world"
    """) for name in ("grows", "returned", "read")))
    grows = specialize("user_lc", "grows", context={})
    assert grows(b"\x01") == [2, 4, 1] and grows(b"\x02") == [2, 4, 2]
    returned = specialize("user_lc", "returned", context={})
    first, second = returned(b""), returned(b"")
    assert first == second == [2, 4] and first is not second
    read = specialize("user_lc", "read", context={})
    assert read(b"abc") == 9 and read(b"") == 6
