"""pypam.arguments: the one parser for pam.d arguments (pam_pypam's own and every
module's). Through real libpam: tests/test_module_arguments.py (the modules) and
tests/test_pypam_errors.py (module=, moduledir=)."""
import pytest

from pypam.arguments import (
    ArgumentError,
    Arguments,
    Option,
    Switch,
    absolute_path,
    choice,
    int_range,
    parse_arguments,
)

ARGS = Arguments(Switch("debug"), Option("policy", absolute_path),
                 Option("mode", choice("a", "b"), default="a"),
                 Option("tries", int_range(1, 10), default=3))


def parse(*args):
    warned = []
    return ARGS.parse(list(args), warn=warned.append), warned


def test_defaults_and_values():
    assert parse() == ({"debug": False, "policy": None, "mode": "a", "tries": 3}, [])
    assert parse("debug", "policy=/p", "mode=b", "tries=10", "debug") == (
        {"debug": True, "policy": "/p", "mode": "b", "tries": 10}, [])


def test_unknown_arguments_are_warned_once_each_and_ignored():
    values, warned = parse("bogus", "x=1", "bogus", "DEBUG", "policy=/p")
    assert values["policy"] == "/p" and not values["debug"]
    assert warned == ["ignoring unknown argument 'bogus'", "ignoring unknown argument 'x=1'",
                      "ignoring unknown argument 'DEBUG'"]
    _, warned = parse("y" * 100)
    assert warned == [f"ignoring unknown argument {'y' * 64 + '...'!r}"]


@pytest.mark.parametrize("args, message", [
    (["policy=etc/policy"], "policy= must be an absolute path (got 'etc/policy')"),
    (["policy="], "policy= must be an absolute path"),
    (["policy=/a", "policy=/a"], "policy= given twice"),
    (["policy"], "policy= needs a value"),
    (["debug=1"], "debug takes no value"),
    (["mode=c"], "mode= must be one of a, b"),
    (["tries=0"], "tries= must be an integer from 1 to 10"),
    (["tries=11"], "tries= must be an integer from 1 to 10"),
    (["tries= 5"], "tries= must be an integer"),
    (["tries=+5"], "tries= must be an integer"),
    (["tries=5_0"], "tries= must be an integer"),
    (["tries=\u0665"], "tries= must be an integer"),  # ARABIC-INDIC DIGIT FIVE
])
def test_a_known_argument_in_the_wrong_shape_is_refused(args, message):
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(*args)


def test_negative_ranges_take_a_sign():
    assert Arguments(Option("n", int_range(-5, 5))).parse(["n=-5"], warn=print) == {"n": -5}


def test_pam_pypams_own_arguments_use_the_same_rules():
    parsed = parse_arguments(["module=m", "debug", "moduledir=/d", "x=1"], "/default")
    assert (parsed.module, parsed.moduledir, parsed.args) == ("m", "/d", ["debug", "x=1"])
    assert parse_arguments(["module=m"], "/default").moduledir == "/default"
    for argv, message in ((["x"], "module= is required"),
                          (["module=a", "module=b"], "module= given twice"),
                          (["module=m", "moduledir=d"], "must be an absolute, normalised")):
        with pytest.raises(ArgumentError, match=message):
            parse_arguments(argv, "/default")
