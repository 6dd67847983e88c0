"""tickray.cluster: command line, run launch, (later) the REST service and sweeps."""
