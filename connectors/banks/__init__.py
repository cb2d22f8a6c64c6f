"""Built-in bank profiles: data files (one TOML per bank), read by `connectors.profiles`."""
