"""The userspace reference SIP helper: nfnetlink_cthelper + NFQUEUE + ctnetlink around sipct.spec."""
