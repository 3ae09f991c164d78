"""Configuration: the settings table, config and fleet files, their validation."""
