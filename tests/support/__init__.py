"""What several test modules share and none of them tests: the lab's hosts
and probes (lab), the signalled commands (kill), SIP messages for the lab
(sip_messages) and the kernel tests (netlink_sip_messages), netlink bytes
built by hand (netlink_bytes), captures (pcaps) and the reference helper's
fake kernel (reference).

Imported as ``tests.support.NAME``: pytest puts the repository on sys.path
(pyproject.toml, ``pythonpath``)."""
