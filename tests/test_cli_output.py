"""The one output helper of the ``secagg`` commands (simulation/cli/output.py).

Claims tested: with --json it prints exactly ``json.dumps(payload, indent=2, default=...)``, else the
lines, one per line (a single string is one line); a callable payload is called only with --json and
lazy lines (a callable or a generator) are used only without it."""

from __future__ import annotations

import argparse
import json
from datetime import date

import pytest

from simulation.cli.output import emit

PAYLOAD = {"b": [1, 2.5, None], "a": "x"}


def _args(as_json: bool) -> argparse.Namespace:
    return argparse.Namespace(json=as_json)


def test_json_is_the_indented_dump_of_the_payload(capsys):
    emit(_args(True), PAYLOAD, ["never printed"])
    assert capsys.readouterr().out == json.dumps(PAYLOAD, indent=2) + "\n"


def test_without_json_each_line_is_printed_and_one_string_is_one_line(capsys):
    emit(_args(False), PAYLOAD, ["first", "", "third"])
    assert capsys.readouterr().out == "first\n\nthird\n"
    emit(_args(False), PAYLOAD, "one line\nthat spans two")
    assert capsys.readouterr().out == "one line\nthat spans two\n"


def test_default_reaches_json_dumps(capsys):
    emit(_args(True), {"when": date(2026, 11, 30)}, default=str)
    assert json.loads(capsys.readouterr().out) == {"when": "2026-11-30"}
    with pytest.raises(TypeError):  # without it, an object JSON cannot hold is not silently stringified
        emit(_args(True), {"when": date(2026, 11, 30)})


def test_each_form_is_computed_only_when_it_is_printed(capsys):
    def payload():
        raise AssertionError("the JSON payload was built without --json")

    def lines():
        raise AssertionError("the text was built with --json")
        yield  # a generator: nothing runs until it is consumed

    emit(_args(False), payload, ["text"])
    emit(_args(True), {"ok": True}, lines())
    emit(_args(True), {"ok": True}, lambda: 1 / 0)
    assert capsys.readouterr().out == "text\n" + json.dumps({"ok": True}, indent=2) + "\n" + \
        json.dumps({"ok": True}, indent=2) + "\n"
    emit(_args(True), lambda: {"lazy": 1})
    emit(_args(False), {}, lambda: ["from a callable"])
    assert capsys.readouterr().out == json.dumps({"lazy": 1}, indent=2) + "\nfrom a callable\n"
