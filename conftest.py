# The suite runs from a bare checkout: this file puts the repository root on sys.path (pytest's
# rootdir conftest) and loads the batchgrad-spec plugin (options, profiles, header, summary).
# Installed, the `batchgrad-spec` command loads the same plugin with `-p batchgrad_spec.plugin`.
pytest_plugins = ["batchgrad_spec.plugin"]
