"""StopChecker: stop strings fire wherever they end, including inside the newest token."""

from sluice.frontend.stop_checker import StopChecker


def _feed(checker: StopChecker, pieces: list[str]) -> tuple[int, int] | None:
    """(index of the piece that completed a stop string, end offset) or None."""
    text = ""
    for index, piece in enumerate(pieces):
        text += piece
        end = checker.find(text, len(piece))
        if end is not None:
            return index, end
    return None


def test_stop_checker_matches_a_suffix_at_a_token_boundary() -> None:
    assert _feed(StopChecker(["Paris"]), ["The capital is", " Paris", "."]) == (1, 20)


def test_stop_checker_matches_a_string_that_ends_inside_a_token() -> None:
    # TGI never fires here: "Pari" ends inside the token " Paris".
    assert _feed(StopChecker(["Pari"]), ["The capital is", " Paris", "."]) == (1, 19)


def test_stop_checker_matches_across_several_tokens() -> None:
    assert _feed(StopChecker(["a b c"]), ["x a", " b", " c", " d"]) == (2, 7)


def test_stop_checker_picks_the_earliest_end_among_stop_strings() -> None:
    assert _feed(StopChecker(["world", "lo w"]), ["hello world"]) == (0, 7)


def test_stop_checker_without_match_or_stop_strings() -> None:
    assert _feed(StopChecker(["zzz"]), ["abc", "def"]) is None
    assert _feed(StopChecker([]), ["abc"]) is None
    assert _feed(StopChecker([""]), ["abc"]) is None


def test_stop_checker_ignores_empty_new_text() -> None:
    assert StopChecker(["abc"]).find("abc", 0) is None
