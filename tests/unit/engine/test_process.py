"""The engine process reads TGI's PREFIX_CACHING switch: on unless "0" or "false"."""

import pytest

from sluice.engine.process import prefix_caching_enabled


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("", True), ("1", True), ("true", True), ("0", False), ("false", False)]
    + [("False", False), (" 0 ", False)],
)
def test_prefix_caching_enabled_follows_tgi_env(value: str | None, enabled: bool) -> None:
    assert prefix_caching_enabled(value) is enabled
