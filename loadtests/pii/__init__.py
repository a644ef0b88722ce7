"""Measuring the gateway's personal-information detector on a labelled synthetic corpus."""
