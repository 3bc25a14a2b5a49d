from service.logsafe import printable


def test_printable_escapes_only_what_breaks_a_line():
    assert printable("plain name-1.x") == "plain name-1.x"
    assert printable("café ünïcode") == "café ünïcode"
    assert printable("a\nb\rc\td\x1b[31m\x1ce\u2028f\x85") == "a\\nb\\rc\\td\\x1b[31m\\x1ce\\u2028f\\x85"
    assert printable(None) == "None"
