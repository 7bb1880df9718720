"""pytest-fieldcheck: the pytest plugin that runs fieldcheck claims."""
