"""The functions behind `depmask <command>`; their signatures are the CLI schema (jsonargparse)."""
