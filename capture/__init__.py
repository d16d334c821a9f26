"""Captures in and out: pcap/pcapng files turned into dialogs (``sipct
import``), the lab's traffic written as pcapng (``sipct run --pcap``), and real
user agents observed in the lab (``sipct observe``)."""
