"""Readers and writers for scans, phantoms and dataset builders (imported as ``recon.datasets``)."""
