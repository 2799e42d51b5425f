"""Model presets as data: one TOML file per named ModelConfig (see ModelConfig.preset)."""
