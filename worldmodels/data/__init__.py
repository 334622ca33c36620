"""Episode and series files: atomic writes, validated reads, streaming batches."""
