"""`sipct explain`: what the helper did to each packet and why, in words and as a ladder diagram."""
