"""The module parameters of nf_conntrack_sip, as one value."""

from __future__ import annotations

from dataclasses import dataclass

SIP_PORT = 5060
SIP_TIMEOUT = 3600  # SIP_TIMEOUT in include/linux/netfilter/nf_conntrack_sip.h
MAX_PORTS = 8  # MAX_PORTS in nf_conntrack_sip.c


class ParameterError(ValueError):
    """A module parameter the kernel would refuse at load time."""


@dataclass(frozen=True, slots=True)
class ModuleParams:
    """``modprobe nf_conntrack_sip ports=… sip_timeout=… …``.

    ``sip_direct_signalling``, ``sip_direct_media`` and ``sip_external_media``
    are ``int`` module parameters that the kernel only tests for non-zero;
    they are kept as booleans here.
    """

    ports: tuple[int, ...] = (SIP_PORT,)
    sip_timeout: int = SIP_TIMEOUT
    sip_direct_signalling: bool = True
    sip_direct_media: bool = True
    sip_external_media: bool = False
    # nf_conntrack_expect.c: nf_ct_expect_max = expect_hashsize * 4, global
    # per network namespace (a sysctl: nf_conntrack_expect_max; 4096 here).
    expect_max: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= len(self.ports) <= MAX_PORTS:
            # module_param_array(ports, ushort, &ports_c, 0400) refuses a 9th value.
            raise ParameterError(f"ports: 1 to {MAX_PORTS} ports, got {len(self.ports)}")
        for port in self.ports:
            if not 0 < port <= 0xFFFF:
                raise ParameterError(f"ports: {port} is not a port number (1-65535)")
        if not 0 <= self.sip_timeout <= 0xFFFFFFFF:
            raise ParameterError(f"sip_timeout: {self.sip_timeout} is not an unsigned int")
        if self.expect_max < 1:
            raise ParameterError("expect_max must be positive")

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> "ModuleParams":
        """Build from a dialog file's or sysfs's ``name: value`` pairs."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ParameterError(f"unknown module parameter(s): {', '.join(sorted(unknown))}"
                                 f" (known: {', '.join(sorted(known))})")
        kwargs: dict[str, object] = {}
        for name, value in values.items():
            if name == "ports":
                if isinstance(value, int):
                    value = (value,)
                elif isinstance(value, str):
                    value = tuple(int(p) for p in value.split(",") if p.strip())
                else:
                    value = tuple(int(p) for p in value)  # type: ignore[union-attr]
            elif name in ("sip_direct_signalling", "sip_direct_media", "sip_external_media"):
                if isinstance(value, bool):
                    pass
                elif isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
                    value = int(value) != 0
                else:
                    raise ParameterError(f"{name}: expected 0 or 1, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise ParameterError(f"{name}: expected a number, got {value!r}")
                try:
                    value = int(value)
                except ValueError:
                    raise ParameterError(f"{name}: expected a number, got {value!r}") from None
            kwargs[name] = value
        return cls(**kwargs)  # type: ignore[arg-type]

    def as_mapping(self) -> dict[str, object]:
        return {
            "ports": list(self.ports),
            "sip_timeout": self.sip_timeout,
            "sip_direct_signalling": int(self.sip_direct_signalling),
            "sip_direct_media": int(self.sip_direct_media),
            "sip_external_media": int(self.sip_external_media),
            "expect_max": self.expect_max,
        }


DEFAULT_PARAMS = ModuleParams()
