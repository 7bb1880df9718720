"""Placeholder: the pytest plugin (fixtures, options, reports) is being built."""
