from sluice.distributed.shard_group import interface_reaching


def test_the_loopback_interface_reaches_localhost() -> None:
    assert interface_reaching("127.0.0.1") == "lo"
    assert interface_reaching("localhost") == "lo"


def test_an_unresolvable_host_has_no_interface() -> None:
    assert interface_reaching("no-such-host.invalid") is None
