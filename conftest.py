# The suite runs from a bare checkout: this file puts the repository root on sys.path (pytest's
# rootdir conftest) and loads the batchgrad-spec plugin (options, profiles, header, summary).
pytest_plugins = ["tests.plugin"]
