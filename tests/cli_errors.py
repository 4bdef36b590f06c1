"""What every bad input must produce, shared by the tests of the command line."""


def one_error_line(capsys) -> str:
    """The captured stderr, asserted to be exactly one ``minippo: error: ...`` line with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minippo: error: "), err
    return lines[0]
