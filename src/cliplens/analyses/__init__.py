"""Analyses built on the decomposition: text pools and TEXTSPAN head descriptions."""
