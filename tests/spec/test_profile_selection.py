"""Which profile a kernel version gets: boundaries measured on the packaged sources."""

import pytest

from sipct.spec.profiles import PROFILES, UnknownProfile, profile_for_kernel, profile_named


@pytest.mark.parametrize("version, profile", [
    ("6.1.170", "6.1.170"), ("6.1.175", "6.1.170"), ("6.1.176", "6.1.176"), ("6.1.187", "6.1.176"),
    ("6.1.189", "6.1.176"), ("6.1.190", "6.1.192"), ("6.1.192", "6.1.192"),
    ("6.12.100", "6.1.170"), ("6.12.107", "6.1.176"), ("6.12.110", "6.1.176"), ("6.12.111", "6.1.192"),
    ("6.12.117", "6.1.192"), ("6.18.44", "6.18"), ("6.19", "6.18"), ("5.10.200", "6.1.170"),
])
def test_profile_for_kernel(version, profile):
    assert profile_for_kernel(version).name == profile


def test_profiles_differ_where_the_sources_differ():
    legacy, partial, hardened = (PROFILES[n] for n in ("6.1.170", "6.1.176", "6.1.192"))
    assert not legacy.bounded_numbers and partial.bounded_numbers and hardened.bounded_numbers
    assert not legacy.strict_uri_port and partial.strict_uri_port
    assert not partial.skip_whitespace_null_at_end and hardened.skip_whitespace_null_at_end


def test_unknown_names_are_refused():
    with pytest.raises(UnknownProfile, match="known: 6.1.170, 6.1.176, 6.1.192, 6.18"):
        profile_named("5.4")
    with pytest.raises(UnknownProfile):
        profile_for_kernel("linux")
