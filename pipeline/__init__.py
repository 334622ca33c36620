"""One thin entry per stage: parse the config, call the library, write outputs."""
